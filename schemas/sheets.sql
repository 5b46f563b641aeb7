-- Sheet registry: one row per sheet snapshot. A snapshot is its own table (snapshot_table) with item_ref unique.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.sheets (
  sheet_id STRING NOT NULL COMMENT 'stable sheet id (the use case name): labels key on it across versions',
  use_case STRING NOT NULL COMMENT 'use case (Dagster partition)',
  version STRING NOT NULL COMMENT 'content hash of the snapshot rows and schema',
  snapshot_table STRING NOT NULL COMMENT 'three-level name of the snapshot table',
  row_count BIGINT NOT NULL COMMENT 'items in the snapshot',
  column_specs STRING NOT NULL COMMENT 'JSON list: name, type, category, nullable, tags (declared and detected)',
  quality STRING COMMENT 'JSON: PII/PHI scan findings per column',
  status STRING NOT NULL COMMENT 'draft | published | archived',
  created_at TIMESTAMP NOT NULL COMMENT 'first time this version was materialized',
  dagster_run_id STRING COMMENT 'run that created the version'
)
USING DELTA
COMMENT 'Validated snapshots of source tables (sheets)';
