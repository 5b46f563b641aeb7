-- Feedback on served answers; seq is the monotonically increasing high-water mark sensors use as cursor.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.feedback (
  feedback_id STRING NOT NULL,
  seq BIGINT NOT NULL,
  use_case STRING NOT NULL,
  request_id STRING,
  item_ref STRING,
  rating STRING COMMENT 'up | down',
  correction VARIANT COMMENT 'corrected label, validated against the response schema',
  comment STRING,
  author STRING COMMENT 'who the feedback says it is from',
  caller STRING COMMENT 'who sent it: the serving token name, or the login name for ontos feedback',
  status STRING NOT NULL COMMENT 'new | applied | rejected',
  reason STRING COMMENT 'why it was rejected',
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'User feedback';
