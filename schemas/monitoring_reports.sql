-- Monitoring per use case and time window, computed from the inference log and feedback.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.monitoring_reports (
  report_id STRING NOT NULL,
  use_case STRING NOT NULL,
  endpoint_name STRING NOT NULL,
  window_start TIMESTAMP NOT NULL,
  window_end TIMESTAMP NOT NULL,
  request_count BIGINT NOT NULL,
  error_rate DOUBLE,
  latency_p50_ms DOUBLE,
  latency_p95_ms DOUBLE,
  latency_p99_ms DOUBLE,
  positive_feedback_rate DOUBLE,
  accuracy DOUBLE COMMENT 'where feedback gives ground truth',
  response_distribution STRING COMMENT 'JSON',
  drift STRING COMMENT 'JSON: per feature and prediction, PSI and test statistic',
  created_at TIMESTAMP NOT NULL,
  ab_test STRING COMMENT 'JSON: per model version (arm) requests, error rate, p95, thumbs-up share; the difference, its interval and verdict'
)
USING DELTA
COMMENT 'Monitoring reports';
