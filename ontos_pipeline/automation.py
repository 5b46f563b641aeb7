"""Schedules and sensors."""

from __future__ import annotations

from dagster import (
    AssetObservation,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.stages.feedback import FEEDBACK
from ontos_pipeline.stages.improve import dump_cursor, evaluate_retrains, parse_cursor

DATA_VERSION_TAG = "dagster/data_version"

MONITORING_CRON = "0 * * * *"  # hourly; each report covers the spec's window_minutes (60 by default)
RETRAIN_SENSOR = "feedback_retrain_sensor"


def monitoring_schedule(job, use_cases: list[str]):
    """Every hour, one monitoring run per use case (run key: use case + tick, so a tick never runs twice)."""

    @schedule(name="monitoring_schedule", cron_schedule=MONITORING_CRON, job=job,
              default_status=DefaultScheduleStatus.RUNNING, execution_timezone="UTC")
    def _schedule(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.isoformat()
        for name in use_cases:
            yield RunRequest(run_key=f"{name}:{tick}", partition_key=name, tags={"ontos/tick": tick})

    return _schedule


def feedback_retrain_sensor(job, interval_seconds: int):
    """Per use case: enough new actionable feedback or reviewed labels -> one `retrain` run of that partition.

    The cursor (JSON: use case -> feedback seq high-water mark and reviewed-label count) only moves when a run is
    requested, and the run key names the marks: see `stages.improve` for why nothing is counted twice or missed.
    """

    @sensor(name=RETRAIN_SENSOR, job=job, minimum_interval_seconds=interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description="Requests a retrain (labels -> training sheet -> model -> evaluation -> endpoint) of a use "
                        "case when its new actionable feedback or reviewed labels reach the spec's retrain "
                        "thresholds.")
    def _sensor(context: SensorEvaluationContext, lakehouse: LocalLakehouseResource,
                use_cases: UseCasesResource):
        decisions, cursor = evaluate_retrains(lakehouse.get(), use_cases.all(), parse_cursor(context.cursor))
        requests = [RunRequest(run_key=d.run_key, partition_key=d.use_case, tags=dict(d.tags))
                    for d in decisions if d.run_key]
        observations = [AssetObservation(asset_key=FEEDBACK, partition=d.use_case,
                                         tags={DATA_VERSION_TAG: d.data_version},
                                         metadata={"feedback_seq": d.seen.last_seq})
                        for d in decisions if d.observe]
        for d in decisions:
            context.log.info(d.reason)
        if not requests:
            return SensorResult(skip_reason=SkipReason("; ".join(d.reason for d in decisions)),
                                asset_events=observations, cursor=dump_cursor(cursor))
        return SensorResult(run_requests=requests, asset_events=observations, cursor=dump_cursor(cursor))

    return _sensor
