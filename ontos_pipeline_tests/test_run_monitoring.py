"""A run whose worker is killed with kill -9 does not stay STARTED: the daemon's run monitoring (through our run
launcher) marks it failed, which frees its queue slot, and run retries launch it once more. A real daemon and a real
run worker on a tiny code location, with the instance config `prepare_dagster_home` writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from ontos_pipeline.instance import prepare_dagster_home
from ontos_pipeline.platform.run_launcher import process_alive, worker_pid
from ontos_pipeline_tests.conftest import make_settings

NAPPING = """
import os, time
from dagster import Definitions, job, op

@op
def nap():
    marker = os.environ["NAP_MARKER"]  # the first attempt naps (and is killed); the retry finishes
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(600)

@job
def napping():
    nap()

defs = Definitions(jobs=[napping])
"""


def _wait(what: str, condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_a_run_killed_with_kill_9_is_marked_failed_and_retried_once(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    dagster_home = prepare_dagster_home(make_settings(tmp_path / "home", tmp_path), poll_seconds=1)
    (tmp_path / "napping.py").write_text(textwrap.dedent(NAPPING), encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "NAP_MARKER": str(tmp_path / "napped")}
    location = ["-f", str(tmp_path / "napping.py")]
    instance = DagsterInstance.from_config(str(dagster_home))  # its storage first: two creators would race
    instance.get_runs()
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", *location],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        subprocess.run(
            [str(bin_dir / "dagster"), "job", "launch", *location, "-j", "napping"],
            env=env,
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )
        [run] = instance.get_runs()
        _wait("the run to start", lambda: instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED)
        pid = _wait("the run worker", lambda: worker_pid(instance, run.run_id))
        assert process_alive(pid)
        # The code server that started the worker would notice its own child's death too (when it lives, unlike
        # after an OOM kill of the group); it is paused until the run is marked, so only run monitoring can tell.
        code_server = _parent_pid(pid)
        os.kill(code_server, signal.SIGSTOP)
        try:
            os.kill(pid, signal.SIGKILL)
            failed = _wait(
                "the killed run to be marked failed",
                lambda: (r := instance.get_run_by_id(run.run_id)).status == DagsterRunStatus.FAILURE and r,
            )
        finally:
            os.kill(code_server, signal.SIGCONT)
        retry = _wait(
            "the retry to succeed",
            lambda: [
                r
                for r in instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run.run_id}))
                if r.status == DagsterRunStatus.SUCCESS
            ],
        )
        assert failed.status == DagsterRunStatus.FAILURE and len(retry) == 1
        messages = [e.message for e in instance.all_logs(run.run_id)]
        log = "\n".join(m or "" for m in messages)
        assert f"run worker process {pid} is gone" in log, log
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        instance.dispose()
