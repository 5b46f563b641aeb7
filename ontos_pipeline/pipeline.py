"""Every step of the loop, in loop order: the one place that lists what the code location materializes.

Importing this module registers nothing: `STEPS` is a plain tuple, `build_assets` makes the Dagster assets from it,
and the Databricks entry point looks a step up by key (`step`).
"""

from __future__ import annotations

from dagster import PartitionsDefinition

from ontos_pipeline.data.assets import SHEET, SOURCES
from ontos_pipeline.deploy.assets import SERVING_ENDPOINT
from ontos_pipeline.generate.assets import TEMPLATE, TRAINING_SHEET
from ontos_pipeline.improve.assets import ANNOTATION_TASKS, GAP_REPORT, feedback_source
from ontos_pipeline.label.assets import CANONICAL_LABELS
from ontos_pipeline.monitor.assets import INFERENCE_LOG_ASSET, MONITORING_REPORT
from ontos_pipeline.steps import Step, by_key
from ontos_pipeline.train.assets import MODEL_EVALUATION, TRAINED_MODEL, TRAINING_EXPORT

STEPS: tuple[Step, ...] = (
    SOURCES,
    SHEET,  # DATA
    TEMPLATE,
    TRAINING_SHEET,  # GENERATE
    CANONICAL_LABELS,  # LABEL
    TRAINING_EXPORT,
    TRAINED_MODEL,
    MODEL_EVALUATION,  # TRAIN
    SERVING_ENDPOINT,  # DEPLOY
    MONITORING_REPORT,  # MONITOR
    GAP_REPORT,
    ANNOTATION_TASKS,  # IMPROVE
)
_BY_KEY = by_key(STEPS)
FULL_PIPELINE, MONITOR, RETRAIN, IMPROVE = "full_pipeline", "monitor", "retrain", "improve"  # the jobs
# what a retrain runs: new source rows and labels (feedback included) through to the endpoint
RETRAIN_ASSETS = [
    "sheet",
    "canonical_labels",
    "template",
    "training_sheet",
    "training_export",
    "trained_model",
    "model_evaluation",
    "serving_endpoint",
]


def step(key: str) -> Step:
    if key not in _BY_KEY:
        raise KeyError(f"unknown step {key!r}; this code knows {', '.join(sorted(_BY_KEY))}")
    return _BY_KEY[key]


def build_assets(partitions: PartitionsDefinition) -> list:
    """The code location's assets: one per step, plus what others write (feedback, the inference log)."""
    external: list = [feedback_source(partitions), INFERENCE_LOG_ASSET]
    return [*(s.asset(partitions) for s in STEPS), *external]
