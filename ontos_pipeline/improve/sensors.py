"""The retrain sensor: new actionable feedback or reviewed labels request a `retrain` run (logic in `retrain`)."""

from __future__ import annotations

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ontos_pipeline.improve.retrain import dump_cursor, evaluate_retrains, parse_cursor
from ontos_pipeline.label.feedback import FEEDBACK
from ontos_pipeline.resources.base import LakehouseResource, UseCasesResource

DATA_VERSION_TAG = "dagster/data_version"
RETRAIN_SENSOR = "feedback_retrain_sensor"


def feedback_retrain_sensor(job, interval_seconds: int):
    """Per use case: enough new actionable feedback or reviewed labels -> one `retrain` run of that partition.

    The cursor (JSON: use case -> feedback seq high-water mark and reviewed-label count) only moves when a run is
    requested, and the run key names the marks: see `improve.retrain` for why nothing is counted twice or missed.
    """

    @sensor(
        name=RETRAIN_SENSOR,
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a retrain (labels -> training sheet -> model -> evaluation -> endpoint) of a use "
        "case when its new actionable feedback or reviewed labels reach the spec's retrain "
        "thresholds.",
    )
    def _sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource, use_cases: UseCasesResource):
        decisions, cursor = evaluate_retrains(lakehouse.get(), use_cases.all(), parse_cursor(context.cursor))
        requests = [
            RunRequest(run_key=d.run_key, partition_key=d.use_case, tags=dict(d.tags)) for d in decisions if d.run_key
        ]
        observations = [
            AssetObservation(
                asset_key=FEEDBACK,
                partition=d.use_case,
                tags={DATA_VERSION_TAG: d.data_version},
                metadata={"feedback_seq": d.seen.last_seq},
            )
            for d in decisions
            if d.observe
        ]
        for d in decisions:
            context.log.info(d.reason)
        if not requests:
            return SensorResult(
                skip_reason=SkipReason("; ".join(d.reason for d in decisions)),
                asset_events=observations,
                cursor=dump_cursor(cursor),
            )
        return SensorResult(run_requests=requests, asset_events=observations, cursor=dump_cursor(cursor))

    return _sensor
