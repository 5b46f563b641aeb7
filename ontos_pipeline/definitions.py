"""The one Dagster code location. Resources are picked by ONTOS_TARGET; asset code is the same for every target."""

from __future__ import annotations

import warnings

from dagster import AssetSelection, Definitions, StaticPartitionsDefinition, define_asset_job, in_process_executor

from ontos_pipeline.automation import feedback_retrain_sensor, monitoring_schedule
from ontos_pipeline.databricks.config import DatabricksConfigError, load_databricks_config
from ontos_pipeline.settings import Settings, SettingsError, load_settings
from ontos_pipeline.specs import load_use_cases
from ontos_pipeline.wiring import build_assets, data_plane_resources

FULL_PIPELINE, MONITOR, RETRAIN, IMPROVE = "full_pipeline", "monitor", "retrain", "improve"
# what a retrain runs: new source rows and labels (feedback included) through to the endpoint
RETRAIN_ASSETS = ["sheet", "canonical_labels", "template", "training_sheet", "training_export", "trained_model",
                  "model_evaluation", "serving_endpoint"]

# Partitioned asset checks are a Dagster preview feature; we rely on it knowingly (one check result per use case).
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
warnings.filterwarnings("ignore", message="Function `observable_source_asset` is currently in beta")


def build_resources(settings: Settings) -> dict:
    """The orchestrator's resources: on Databricks, steps are submitted as runs (credentials checked here,
    by presence only: no client is built and nothing goes over the network until a step runs)."""
    if settings.target != "databricks":
        return data_plane_resources(settings)
    try:
        config = load_databricks_config(settings.catalog, settings.schema)
    except DatabricksConfigError as exc:
        raise SettingsError(str(exc)) from None
    from ontos_pipeline.databricks.compute import DatabricksCompute  # the Pipes client: orchestrator only

    resources = data_plane_resources(settings)
    resources["compute"] = DatabricksCompute.from_config(config, settings.use_cases_dir)
    return resources


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    use_cases = load_use_cases(settings.use_cases_dir)
    partitions = StaticPartitionsDefinition(list(use_cases))
    assets = build_assets(settings)
    full_pipeline = define_asset_job(FULL_PIPELINE, selection=AssetSelection.all() - AssetSelection.groups(
                                         "monitor", "improve"),
                                     partitions_def=partitions,
                                     description="Data to deployed endpoint for one use case (partition)")
    retrain = define_asset_job(RETRAIN, selection=AssetSelection.assets(*RETRAIN_ASSETS), partitions_def=partitions,
                               description="Retrain one use case on its current data and labels (feedback included), "
                                           "evaluate, gate and redeploy; requested by feedback_retrain_sensor")
    monitor = define_asset_job(MONITOR, selection=AssetSelection.groups("monitor"), partitions_def=partitions,
                               description="Monitoring report of one use case's endpoint over the latest window")
    improve = define_asset_job(IMPROVE, selection=AssetSelection.assets("gap_report", "annotation_tasks"),
                               partitions_def=partitions,
                               description="Gap report and annotation tasks of one use case from its latest "
                                           "evaluation, monitoring and feedback")
    return Definitions(
        assets=assets,
        jobs=[full_pipeline, monitor, retrain, improve],
        schedules=[monitoring_schedule(monitor, list(use_cases))],
        # the sensor reads the feedback table in the orchestrator's process: local tables only, for now
        sensors=[feedback_retrain_sensor(retrain, settings.sensor_interval)] if settings.target == "local" else [],
        resources=build_resources(settings),
        executor=in_process_executor,  # one Spark session per run, shared by its steps
    )


defs = build_definitions()
