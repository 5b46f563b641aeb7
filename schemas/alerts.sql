-- Alerts raised by monitoring: open -> acknowledged -> resolved.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.alerts (
  alert_id STRING NOT NULL,
  use_case STRING NOT NULL,
  kind STRING NOT NULL COMMENT 'drift | error_rate | latency | accuracy',
  severity STRING NOT NULL,
  message STRING NOT NULL,
  evidence STRING COMMENT 'JSON numbers',
  status STRING NOT NULL COMMENT 'open | acknowledged | resolved',
  actor STRING,
  created_at TIMESTAMP NOT NULL,
  acknowledged_at TIMESTAMP,
  resolved_at TIMESTAMP
)
USING DELTA
COMMENT 'Monitoring alerts';
