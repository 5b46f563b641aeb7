-- Annotation tasks from gaps: pending -> in_progress -> completed.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.annotation_tasks (
  task_id STRING NOT NULL,
  gap_id STRING NOT NULL,
  use_case STRING NOT NULL,
  instructions STRING NOT NULL,
  item_refs ARRAY<STRING> NOT NULL COMMENT 'items to label, most uncertain first',
  priority INT NOT NULL,
  status STRING NOT NULL COMMENT 'pending | in_progress | completed',
  assignee STRING,
  created_at TIMESTAMP NOT NULL,
  started_at TIMESTAMP,
  completed_at TIMESTAMP
)
USING DELTA
COMMENT 'Annotation tasks';
