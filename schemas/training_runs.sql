-- Training runs and their lineage: model version <-> training sheet <-> sheet <-> template <-> labels.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.training_runs (
  mlflow_run_id STRING NOT NULL,
  use_case STRING NOT NULL,
  model_name STRING NOT NULL,
  model_version STRING,
  training_sheet_id STRING NOT NULL,
  training_sheet_version STRING NOT NULL,
  sheet_version STRING NOT NULL,
  template_version STRING NOT NULL,
  label_snapshot_version BIGINT COMMENT 'canonical_labels table version used',
  export_checksums STRING COMMENT 'JSON: split -> sha256 of the exported JSONL',
  metrics STRING COMMENT 'JSON of validation metrics',
  dagster_run_id STRING,
  git_sha STRING,
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Training runs with lineage';
