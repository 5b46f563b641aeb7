"""The IMPROVE sensors: new actionable feedback or reviewed labels request a `retrain` run (logic in `retrain`); a
monitoring breach requests a retrain or annotation tasks (logic in `breaches`)."""

from __future__ import annotations

from dagster import (
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ontos_pipeline.improve.breaches import evaluate_breaches
from ontos_pipeline.improve.breaches import parse_cursor as parse_breach_cursor
from ontos_pipeline.improve.retrain import dump_cursor, evaluate_retrains, parse_cursor
from ontos_pipeline.label.feedback import FEEDBACK
from ontos_pipeline.resources.base import LakehouseResource, UseCasesResource

DATA_VERSION_TAG = "dagster/data_version"
RETRAIN_SENSOR = "feedback_retrain_sensor"


def feedback_retrain_sensor(job, improve_job, interval_seconds: int):
    """Per use case: enough new actionable feedback or reviewed labels -> one `retrain` run of that partition; a new
    monitoring breach the spec acts on -> one `retrain` (enough new labels) or `improve` run (annotation tasks for
    the drifted region), unless a retrain is requested or running already (it covers the breach).

    One sensor decides both, so a breach and the feedback that came with it never request two retrains. The cursor
    (JSON: use case -> feedback seq high-water mark and reviewed-label count; `@breaches`: active alerts acted on)
    only moves when a run is requested, and the run keys name the marks or alerts: see `improve.retrain` and
    `improve.breaches` for why nothing is counted twice or missed.
    """

    @sensor(
        name=RETRAIN_SENSOR,
        jobs=[job, improve_job],
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a retrain (labels -> training sheet -> model -> evaluation -> endpoint) of a use "
        "case when its new actionable feedback or reviewed labels reach the spec's retrain thresholds; a "
        "monitoring breach (drift of an input the model reads, accuracy or thumbs-up below minimum) requests a "
        "retrain when enough new labels exist, else annotation tasks for the drifted region.",
    )
    def _sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource, use_cases: UseCasesResource):
        lh, specs = lakehouse.get(), use_cases.all()
        decisions, cursor = evaluate_retrains(lh, specs, parse_cursor(context.cursor))
        requests = [
            RunRequest(run_key=d.run_key, job_name=job.name, partition_key=d.use_case, tags=dict(d.tags))
            for d in decisions
            if d.run_key
        ]
        covered = {d.use_case for d in decisions if d.run_key} | _retraining(context, job.name)
        breaches = evaluate_breaches(lh, specs, parse_breach_cursor(context.cursor), covered)
        requests += [
            RunRequest(run_key=a.run_key, job_name=a.job, partition_key=a.use_case, tags=a.tags)
            for a in breaches.actions
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
        reasons = [d.reason for d in decisions] + breaches.reasons
        for reason in reasons:
            context.log.info(reason)
        stored = dump_cursor(cursor, breaches.cursor)
        if not requests:
            return SensorResult(skip_reason=SkipReason("; ".join(reasons)), asset_events=observations, cursor=stored)
        return SensorResult(run_requests=requests, asset_events=observations, cursor=stored)

    return _sensor


def _retraining(context: SensorEvaluationContext, job_name: str) -> set[str]:
    """Use cases with a retrain run queued or running (it will cover a breach that opened meanwhile)."""
    unfinished = [
        DagsterRunStatus.QUEUED,
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
    ]
    runs = context.instance.get_runs(RunsFilter(job_name=job_name, statuses=unfinished))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}
