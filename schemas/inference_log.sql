-- Every request the serving process answered (local twin of Databricks inference tables).
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.inference_log (
  request_id STRING NOT NULL COMMENT 'the id the server gave the request (X-Request-Id of the answer)',
  request_time TIMESTAMP NOT NULL,
  endpoint_name STRING NOT NULL,
  model_version STRING,
  inputs STRING COMMENT 'JSON record sent',
  rendered_prompt STRING,
  response STRING COMMENT 'JSON prediction',
  latency_ms DOUBLE,
  status_code INT NOT NULL,
  error STRING,
  caller STRING COMMENT 'who called: the name of the serving token',
  client_request_id STRING COMMENT 'the X-Request-Id the client sent, if any (not unique)',
  guardrails STRING COMMENT 'JSON list of guardrail decisions (rule, stage, action, column or field, counts; never the PII)'
)
USING DELTA
COMMENT 'Inference log';
