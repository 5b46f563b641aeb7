"""The notification sensors: a failed run of the code location is told on its use case's channels, and the outbox
is flushed periodically (deliveries that failed earlier are retried). Thin on top of `notifier` and `messages`."""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from ontos_pipeline.notify.messages import Notice, run_failure_notice
from ontos_pipeline.resources.base import NotifierResource, UseCasesResource

RUN_FAILURE_SENSOR = "run_failure_notification_sensor"
RETRY_SENSOR = "notification_retry_sensor"
PARTITION_TAG = "dagster/partition"


def _root_message(error) -> str:
    """The innermost cause of a step's error (the user's exception, not Dagster's wrapper around it)."""
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    return "" if error is None else str(error.message).strip()


def failure_notice(context: RunFailureSensorContext, dagster_url: str) -> Notice:
    """The notice of the failed run of `context`: job, partition, failing steps with their errors, run link."""
    run = context.dagster_run
    steps = [
        (str(e.step_key), _root_message(getattr(e.event_specific_data, "error", None)) or str(e.message))
        for e in context.get_step_failure_events()
    ]
    error = context.failure_event.message or "the run failed"
    return run_failure_notice(dagster_url, run.run_id, run.job_name, run.tags.get(PARTITION_TAG), steps, error)


def run_failure_notification_sensor(interval_seconds: int):
    """Tells every failed run (any job of this code location) on the channels of its partition's use case (every
    use case's channels for a run without a partition) that list `run_failure`."""

    @run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Notifies the use case's Slack, e-mail and webhook channels (its spec's `notifications`) of a "
        "failed run: job, partition, failing step, error and a link to the run.",
    )
    def _sensor(context: RunFailureSensorContext, notifier: NotifierResource, use_cases: UseCasesResource):
        specs = use_cases.all()
        partition = context.dagster_run.tags.get(PARTITION_TAG)
        chosen = [specs[partition]] if partition in specs else list(specs.values())
        notice = failure_notice(context, notifier.dagster_url)
        outcome = notifier.get(context.log).notify([s.notifications for s in chosen], notice)
        context.log.info(f"{notice.key}: {outcome.summary()}")

    return _sensor


def notification_retry_sensor(interval_seconds: int):
    """Flushes the notification outbox: deliveries that failed (a receiver down) are retried until they succeed."""

    @sensor(
        name=RETRY_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Retries notifications whose delivery failed (receiver down, 5xx, SMTP refused); each "
        "notice reaches each channel once.",
    )
    def _sensor(context: SensorEvaluationContext, notifier: NotifierResource):
        outcome = notifier.get(context.log).flush()
        return SkipReason(f"notification outbox: {outcome.summary()}")

    return _sensor
