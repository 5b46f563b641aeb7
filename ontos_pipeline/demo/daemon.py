"""The Dagster daemon as a child process (the demo and the benchmarks), and what its sensor runs did.

The daemon evaluates `feedback_retrain_sensor` exactly as under `dagster dev`: it stores the cursor in the instance
under ONTOS_HOME, and the runs it launches carry `dagster/sensor_name` and the run key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from ontos_pipeline.improve.sensors import RETRAIN_SENSOR
from ontos_pipeline.settings import Settings

SENSOR_TAG = "dagster/sensor_name"


def sensor_cursor(instance, sensor_name: str = RETRAIN_SENSOR) -> str | None:
    """The cursor the daemon stored for a sensor of this instance (None before its first tick)."""
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == sensor_name and state.instigator_data is not None:
            return state.instigator_data.cursor
    return None


class DaemonProcess:
    """`dagster-daemon run` on this code location; leaving the block stops it (runs it launched keep going)."""

    def __init__(self, settings: Settings, sensor_interval: int, log: Path | None = None):
        self.settings, self.sensor_interval = settings, sensor_interval
        self.log = log or settings.home / "dagster" / "daemon.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> DaemonProcess:
        bin_dir = Path(sys.executable).parent
        env = {
            **os.environ,
            "ONTOS_HOME": str(self.settings.home),
            "DAGSTER_HOME": str(self.settings.dagster_home),
            "ONTOS_SENSOR_INTERVAL": str(self.sensor_interval),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            command = [str(bin_dir / "dagster-daemon"), "run", "-m", "ontos_pipeline.definitions"]
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {self.process.returncode}; see {self.log}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def sensor_runs(instance, since: datetime, sensor_name: str = RETRAIN_SENSOR) -> list:
    """Runs the sensor launched since `since`, oldest first."""
    from dagster import RunsFilter

    runs = instance.get_runs(RunsFilter(tags={SENSOR_TAG: sensor_name}, created_after=since))
    return list(reversed(runs))  # the storage lists newest first


def wait_for_sensor_runs(
    instance,
    daemon: DaemonProcess,
    since: datetime,
    partitions: Iterable[str],
    timeout: float,
    on_change: Callable[[object], None] | None = None,
    poll_seconds: float = 2.0,
) -> dict[str, object]:
    """Wait until the sensor launched a run for each partition and all of them finished; partition -> last run."""
    wanted, seen, deadline = set(partitions), {}, time.monotonic() + timeout
    while True:
        daemon.check()
        runs = {r.tags.get("dagster/partition"): r for r in sensor_runs(instance, since)}
        for key, run in runs.items():
            if on_change is not None and seen.get(key) != run.status:
                on_change(run)
            seen[key] = run.status
        done = {k for k, r in runs.items() if r.is_finished}
        if wanted <= done:
            return {k: runs[k] for k in wanted}
        if time.monotonic() > deadline:
            missing = sorted(wanted - set(runs))
            raise TimeoutError(
                f"after {timeout:.0f} s the retrain sensor had not finished runs for "
                f"{', '.join(sorted(wanted - done))}"
                + (f" (never requested: {', '.join(missing)})" if missing else "")
                + f"; see {daemon.log}"
            )
        time.sleep(poll_seconds)
