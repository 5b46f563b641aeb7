-- Prompt templates, one row per content version.
CREATE TABLE IF NOT EXISTS {catalog}.{schema}.templates (
  template_id STRING NOT NULL COMMENT 'template name from the use-case spec',
  use_case STRING NOT NULL,
  version STRING NOT NULL COMMENT 'content hash of system prompt, prompt, response schema and variable mapping',
  label_type STRING NOT NULL,
  system_prompt STRING,
  prompt STRING NOT NULL COMMENT 'Jinja2 source, rendered in the sandbox',
  response_schema STRING NOT NULL COMMENT 'JSON Schema of the response',
  variables STRING COMMENT 'JSON: template variable -> sheet column',
  status STRING NOT NULL COMMENT 'draft | published | archived',
  created_at TIMESTAMP NOT NULL,
  dagster_run_id STRING COMMENT 'run that registered the version'
)
USING DELTA
COMMENT 'Prompt templates';
