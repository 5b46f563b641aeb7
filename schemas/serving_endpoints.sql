-- Endpoint events: deploy, keep (gate failed) and rollback, with the served and previous versions.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.serving_endpoints (
  event_id STRING NOT NULL,
  endpoint_name STRING NOT NULL,
  use_case STRING NOT NULL,
  event STRING NOT NULL COMMENT 'deploy | keep | rollback',
  served_version STRING,
  previous_version STRING,
  reason STRING,
  actor STRING COMMENT 'dagster run id or user',
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Serving endpoint configuration history';
