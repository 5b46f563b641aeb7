-- Keys with disagreeing labels from different sources or labelers: surfaced, not silently resolved.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.label_conflicts (
  sheet_id STRING NOT NULL,
  item_ref STRING NOT NULL,
  label_type STRING NOT NULL,
  label_ids ARRAY<STRING> NOT NULL,
  label_values STRING NOT NULL COMMENT 'JSON list of the competing label_data',
  status STRING NOT NULL COMMENT 'open | resolved',
  detected_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Label conflicts';
