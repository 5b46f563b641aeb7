-- Gaps found in evaluation, monitoring and feedback, each with evidence and a suggested action.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.gap_reports (
  gap_id STRING NOT NULL,
  report_id STRING NOT NULL,
  use_case STRING NOT NULL,
  kind STRING NOT NULL COMMENT 'worst_slice | low_support | low_confidence | drift | negative_feedback',
  description STRING NOT NULL,
  evidence STRING NOT NULL COMMENT 'JSON numbers',
  suggested_action STRING NOT NULL,
  severity STRING NOT NULL,
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Gap reports';
