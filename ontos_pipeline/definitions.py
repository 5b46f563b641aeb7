"""The one Dagster code location. Resources are picked by ONTOS_TARGET; asset code is the same for every target."""

from __future__ import annotations

import warnings

from dagster import AssetSelection, Definitions, StaticPartitionsDefinition, define_asset_job, in_process_executor

from ontos_pipeline.improve.sensors import feedback_retrain_sensor
from ontos_pipeline.monitor.schedules import monitoring_schedule
from ontos_pipeline.notify.sensors import notification_retry_sensor, run_failure_notification_sensor
from ontos_pipeline.pipeline import FULL_PIPELINE, IMPROVE, MONITOR, RETRAIN, RETRAIN_ASSETS, build_assets
from ontos_pipeline.resources.targets import orchestrator_resources
from ontos_pipeline.settings import Settings, load_settings
from ontos_pipeline.specs import load_use_cases

# Partitioned asset checks are a Dagster preview feature; we rely on it knowingly (one check result per use case).
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
warnings.filterwarnings("ignore", message="Function `observable_source_asset` is currently in beta")


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    use_cases = load_use_cases(settings.use_cases_dir)
    partitions = StaticPartitionsDefinition(list(use_cases))
    full_pipeline = define_asset_job(
        FULL_PIPELINE,
        selection=AssetSelection.all() - AssetSelection.groups("monitor", "improve"),
        partitions_def=partitions,
        description="Data to deployed endpoint for one use case (partition)",
    )
    retrain = define_asset_job(
        RETRAIN,
        selection=AssetSelection.assets(*RETRAIN_ASSETS),
        partitions_def=partitions,
        description="Retrain one use case on its current data and labels (feedback included), "
        "evaluate, gate and redeploy; requested by feedback_retrain_sensor",
    )
    monitor = define_asset_job(
        MONITOR,
        selection=AssetSelection.groups("monitor"),
        partitions_def=partitions,
        description="Monitoring report of one use case's endpoint over the latest window",
    )
    improve = define_asset_job(
        IMPROVE,
        selection=AssetSelection.assets("gap_report", "annotation_tasks"),
        partitions_def=partitions,
        description="Gap report and annotation tasks of one use case from its latest "
        "evaluation, monitoring and feedback",
    )
    return Definitions(
        assets=build_assets(partitions),
        jobs=[full_pipeline, monitor, retrain, improve],
        schedules=[monitoring_schedule(monitor, list(use_cases))],
        # the retrain sensor reads the feedback table in the orchestrator's process: local tables only, for now;
        # the notification sensors read the Dagster instance and their outbox, on every target
        sensors=(
            [feedback_retrain_sensor(retrain, improve, settings.sensor_interval)] if settings.target == "local" else []
        )
        + [
            run_failure_notification_sensor(settings.sensor_interval),
            notification_retry_sensor(max(60, settings.sensor_interval)),
        ],
        resources=orchestrator_resources(settings),
        executor=in_process_executor,  # one Spark session per run, shared by its steps
    )


defs = build_definitions()
