-- Canonical labels: history is appended, never overwritten; the current label is the latest version per key.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.canonical_labels (
  label_id STRING NOT NULL COMMENT 'id of this label version',
  sheet_id STRING NOT NULL,
  item_ref STRING NOT NULL,
  label_type STRING NOT NULL,
  label_data VARIANT NOT NULL COMMENT 'the label (JSON text on the local target)',
  confidence DOUBLE,
  source STRING NOT NULL COMMENT 'import | expert | review | feedback',
  source_ref STRING COMMENT 'file, review id or feedback id the label came from',
  labeled_by STRING,
  version BIGINT NOT NULL COMMENT '1, 2, ... per (sheet_id, item_ref, label_type)',
  allowed_uses ARRAY<STRING> COMMENT 'training | evaluation | serving',
  prohibited_uses ARRAY<STRING>,
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Label an item once, reuse it everywhere';
