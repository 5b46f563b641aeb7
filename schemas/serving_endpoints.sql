-- Endpoint events: deploy, keep (gate failed) and rollback, with the served and previous versions; split: an A/B test
-- serves challenger_version on challenger_percent of the requests next to the served (champion) version.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.serving_endpoints (
  event_id STRING NOT NULL,
  endpoint_name STRING NOT NULL,
  use_case STRING NOT NULL,
  event STRING NOT NULL COMMENT 'deploy | keep | rollback | split',
  served_version STRING,
  previous_version STRING,
  reason STRING,
  actor STRING COMMENT 'dagster run id or user',
  created_at TIMESTAMP NOT NULL,
  challenger_version STRING COMMENT 'the A/B arm under test after the event (null: no split)',
  challenger_percent INT COMMENT 'its share of the requests'
)
USING DELTA
COMMENT 'Serving endpoint configuration history';
