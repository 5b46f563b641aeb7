-- Every request the serving process answered (local twin of Databricks inference tables).
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.inference_log (
  request_id STRING NOT NULL,
  request_time TIMESTAMP NOT NULL,
  endpoint_name STRING NOT NULL,
  model_version STRING,
  inputs STRING COMMENT 'JSON record sent',
  rendered_prompt STRING,
  response STRING COMMENT 'JSON prediction',
  latency_ms DOUBLE,
  status_code INT NOT NULL,
  error STRING,
  caller STRING COMMENT 'who called: the name of the serving token'
)
USING DELTA
COMMENT 'Inference log';
