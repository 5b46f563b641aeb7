-- Labels that did not validate (schema, unknown item): kept with the reason, never dropped silently.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.label_rejects (
  reject_id STRING NOT NULL,
  sheet_id STRING NOT NULL,
  item_ref STRING,
  label_type STRING NOT NULL,
  source STRING NOT NULL,
  source_ref STRING,
  payload STRING COMMENT 'the rejected record as received',
  reason STRING NOT NULL,
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Rejected labels with reasons';
