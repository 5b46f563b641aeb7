"""A run launcher whose runs the daemon's run monitoring can check: a run whose worker process died (kill -9, OOM)
is marked failed instead of staying STARTED forever and holding a slot of the run queue.

Dagster's DefaultRunLauncher starts each run worker as a process on this host but cannot say whether it still
lives, so run monitoring skips its STARTED runs. The worker records its pid in the run's "Started process for run"
engine event; this launcher reads it and looks the process up. With `run_retries` on for crashes only, the daemon
then launches the run again.
"""

from __future__ import annotations

import os

from dagster import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no procfs (macOS): kill(0) said it exists
        return True


class LocalRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = worker_pid(self._instance, run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run worker has not recorded its pid yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker process {pid} is gone (killed?)")


def worker_pid(instance, run_id: str) -> int | None:
    """The pid of the latest worker of a run, from its "Started process for run" engine events."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False).records
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = getattr(event.event_specific_data, "metadata", None) or {}
        pid = metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None
