"""The workbench tables: one name per DDL file in `schemas/` (a test keeps the two in step).

Names only (constants, and the names Databricks derives from an endpoint's): any module (the CLI's read paths
included) can name a table without importing a stage.
"""

from __future__ import annotations

import re

SHEETS = "sheets"  # sheet registry: one row per snapshot version
TEMPLATES = "templates"
CANONICAL_LABELS = "canonical_labels"
LABEL_REVIEWS = "label_reviews"
LABEL_REJECTS = "label_rejects"
LABEL_CONFLICTS = "label_conflicts"
QA_PAIRS = "qa_pairs"  # the training sheets
TRAINING_RUNS = "training_runs"
MODEL_EVALUATIONS = "model_evaluations"
SERVING_ENDPOINTS = "serving_endpoints"
INFERENCE_LOG = "inference_log"
FEEDBACK = "feedback"
MONITORING_REPORTS = "monitoring_reports"
ALERTS = "alerts"
GAP_REPORTS = "gap_reports"
ANNOTATION_TASKS = "annotation_tasks"

ALL = (
    SHEETS,
    TEMPLATES,
    CANONICAL_LABELS,
    LABEL_REVIEWS,
    LABEL_REJECTS,
    LABEL_CONFLICTS,
    QA_PAIRS,
    TRAINING_RUNS,
    MODEL_EVALUATIONS,
    SERVING_ENDPOINTS,
    INFERENCE_LOG,
    FEEDBACK,
    MONITORING_REPORTS,
    ALERTS,
    GAP_REPORTS,
    ANNOTATION_TASKS,
)


def table_name_prefix(endpoint_name: str) -> str:
    """The inference-table prefix of an endpoint: its name as a lower-case identifier (dashes -> underscores)."""
    prefix = re.sub(r"[^a-z0-9_]", "_", str(endpoint_name).lower())
    if not prefix.strip("_"):
        raise ValueError(f"endpoint name {endpoint_name!r} gives no table name prefix")
    return prefix if not prefix[0].isdigit() else "_" + prefix


def payload_table(catalog: str, schema: str, endpoint_name: str) -> str:
    """The three-level name of the endpoint's payload (inference) table."""
    return f"{catalog}.{schema}.{table_name_prefix(endpoint_name)}_payload"
