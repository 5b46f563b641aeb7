-- The training sheet: rendered prompt/response pairs with review status and usage constraints.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.qa_pairs (
  training_sheet_id STRING NOT NULL,
  version STRING NOT NULL COMMENT 'training sheet version',
  item_ref STRING NOT NULL,
  messages STRING NOT NULL COMMENT 'JSON chat messages: system, user',
  response VARIANT COMMENT 'JSON response; null while pending without a proposal',
  status STRING NOT NULL COMMENT 'pending | auto_approved | approved | edited | rejected | flagged',
  response_source STRING COMMENT 'canonical_label | model | review | feedback',
  confidence DOUBLE COMMENT 'confidence of the champion in its proposal (response_source model); null otherwise',
  canonical_label_id STRING,
  split STRING NOT NULL COMMENT 'train | val | test (stable hash of item_ref)',
  allowed_uses ARRAY<STRING>,
  prohibited_uses ARRAY<STRING>,
  sheet_version STRING NOT NULL,
  template_version STRING NOT NULL,
  updated_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Training sheets (prompt/response pairs)';
