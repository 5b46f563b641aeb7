"""The monitoring schedule: one monitoring run per use case every hour."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

MONITORING_CRON = "0 * * * *"  # hourly; each report covers the spec's window_minutes (60 by default)


def monitoring_schedule(job, use_cases: list[str]):
    """Every hour, one monitoring run per use case (run key: use case + tick, so a tick never runs twice)."""

    @schedule(
        name="monitoring_schedule",
        cron_schedule=MONITORING_CRON,
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        execution_timezone="UTC",
    )
    def _schedule(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.isoformat()
        for name in use_cases:
            yield RunRequest(run_key=f"{name}:{tick}", partition_key=name, tags={"ontos/tick": tick})

    return _schedule
