"""Ontos Pipeline: the fine-tuning data loop as a Dagster code location."""

import os

from ontos_pipeline.platform.threads import configure_openmp

configure_openmp()
# before anything imports MLflow (it starts its telemetry client on import): no telemetry, no progress bars in logs
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
