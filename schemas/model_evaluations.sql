-- Evaluation of a challenger on the held-out split, with the promotion gate decision.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.model_evaluations (
  evaluation_id STRING NOT NULL,
  use_case STRING NOT NULL,
  model_name STRING NOT NULL,
  model_version STRING NOT NULL,
  champion_version STRING COMMENT 'champion compared on the same rows, if any',
  metrics STRING NOT NULL COMMENT 'JSON metrics of challenger, baseline and champion',
  gate_passed BOOLEAN NOT NULL,
  gate_details STRING NOT NULL COMMENT 'JSON: each gate rule with its numbers',
  mlflow_run_id STRING,
  dagster_run_id STRING,
  created_at TIMESTAMP NOT NULL
)
USING DELTA
COMMENT 'Model evaluations and promotion gate results';
