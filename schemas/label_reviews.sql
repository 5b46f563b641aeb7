-- Decisions people make with `ontos review`: append-only.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.label_reviews (
  review_id STRING NOT NULL,
  training_sheet_id STRING NOT NULL,
  item_ref STRING NOT NULL,
  label_type STRING NOT NULL,
  decision STRING NOT NULL COMMENT 'approve | edit | reject | flag',
  label_data VARIANT COMMENT 'the edited label, for edit',
  comment STRING,
  reviewer STRING NOT NULL,
  based_on_version STRING NOT NULL COMMENT 'training sheet version the reviewer saw',
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Human review decisions';
