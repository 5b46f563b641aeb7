"""The warm local engine: one Spark Connect server shared by every process, replaced when it dies, and a step that
loses it mid-run fails clearly and writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ontos_pipeline.platform import engine

ROOT = Path(__file__).resolve().parent.parent


def _python(script: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _servers_on(port: int) -> list[int]:
    """Pids of Spark Connect servers bound to `port` (from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if engine.SERVER_CLASS.encode() in cmdline and f"binding.port={port}".encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_every_process_connects_to_the_one_running_engine(spark):
    """Two more processes ask for Spark: both get the session's engine (same JVM pid), no new server starts."""
    running = engine.running()
    assert running is not None and running.alive()
    script = """
        from ontos_pipeline.platform.spark_session import current_engine, get_spark
        spark = get_spark()
        assert spark.range(5).count() == 5
        print(current_engine().pid)
    """
    pids = [int(_python(script, dict(os.environ)).stdout.split()[-1]) for _ in range(2)]
    assert pids == [running.pid, running.pid]
    assert _servers_on(running.port) == [running.pid]
    state = json.loads((Path(running.directory) / engine.STATE).read_text())
    assert state["port"] == running.port and oct(os.stat(Path(running.directory) / engine.STATE).st_mode)[-3:] == "600"


def test_a_killed_engine_is_replaced_by_the_next_command_and_stop_stops_it(tmp_path):
    try:
        _replace_and_stop(tmp_path)
    finally:
        engine.stop(tmp_path / "engine")


def _replace_and_stop(tmp_path: Path) -> None:
    env = {**os.environ, "ONTOS_ENGINE_HOME": str(tmp_path / "engine"), "ONTOS_HOME": str(tmp_path / "home")}
    cli = [sys.executable, "-m", "ontos_pipeline.cli", "engine"]
    started = subprocess.run([*cli, "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    first = engine.running(tmp_path / "engine")
    assert first is not None and f"pid {first.pid}" in started.stdout
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while first.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.running(tmp_path / "engine") is None
    status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert "not running" in status.stdout
    again = _python(
        """
        from ontos_pipeline.platform.spark_session import current_engine, get_spark
        print(get_spark().range(3).count(), current_engine().pid)
    """,
        env,
    )
    assert again.returncode == 0, again.stderr
    count, pid = again.stdout.split()
    assert count == "3" and int(pid) != first.pid
    stopped = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert f"stopped the engine (pid {pid})" in stopped.stdout
    assert engine.running(tmp_path / "engine") is None and not (tmp_path / "engine" / engine.STATE).exists()


KILLED_RUN = """
    import os, sys, time
    from pathlib import Path
    from dagster import MaterializeResult, StaticPartitionsDefinition, materialize
    from pyspark.sql import functions as F
    from ontos_pipeline.platform.lakehouse import LocalLakehouse
    from ontos_pipeline.resources.base import SparkResource
    from ontos_pipeline.resources.local import InProcessCompute
    from ontos_pipeline.steps import Step

    home, marker = Path(sys.argv[1]), Path(sys.argv[2])
    lakehouse = LocalLakehouse.under(home)

    def engine_probe(context, spark: SparkResource) -> MaterializeResult:
        session = spark.session()
        slow = marker.exists()  # the first attempt is slow enough to be killed while Spark writes

        @F.udf("long")
        def wait(x):
            time.sleep(0.2 if slow else 0)
            return x

        rows = session.range(0, 40, numPartitions=4).select(wait("id").alias("id"))
        if slow:
            marker.write_text("writing")
        version = lakehouse.write("raw.probe", rows)
        return MaterializeResult(metadata={"version": version})

    probe = Step("engine_probe", engine_probe, group="test", description="writes while the engine is killed")
    partitions = StaticPartitionsDefinition(["probe"])

    def attempt():
        return materialize([probe.asset(partitions)], partition_key="probe",
                           resources={"spark": SparkResource(), "compute": InProcessCompute()}, raise_on_error=False)

    first = attempt()
    failure = first.get_step_failure_events()[0].event_specific_data.error
    while failure.cls_name.startswith("Dagster") and failure.cause is not None:  # the step's own error
        failure = failure.cause
    print("FIRST", first.success, failure.cls_name, "|", failure.message.replace(chr(10), " "))
    marker.unlink()
    second = attempt()
    if not second.success:
        print(second.get_step_failure_events()[0].event_specific_data.error.to_string())
    print("SECOND", second.success, lakehouse.version("raw.probe"), lakehouse.exists("raw.probe")
          and lakehouse.row_count("raw.probe"))
"""


def test_killing_the_engine_mid_step_fails_the_run_clearly_writes_nothing_and_the_next_run_recovers(tmp_path):
    try:
        _kill_mid_step(tmp_path)
    finally:  # the engines this test started, whatever happened
        engine.stop(tmp_path / "engine")


def _kill_mid_step(tmp_path: Path) -> None:
    env = {**os.environ, "ONTOS_ENGINE_HOME": str(tmp_path / "engine")}
    marker = tmp_path / "marker"
    marker.write_text("slow")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(tmp_path / "home"), str(marker)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while marker.read_text() != "writing":
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    killed = engine.running(tmp_path / "engine")
    time.sleep(1.0)  # Spark is writing the table's files now
    os.kill(killed.pid, signal.SIGKILL)
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, out + err[-3000:]
    first = next(line for line in out.splitlines() if line.startswith("FIRST"))
    assert first.startswith("FIRST False EngineLostError |"), first
    assert f"the local Spark engine (pid {killed.pid}" in first and "nothing of this step was committed" in first
    assert "The next command starts a new engine by itself" in first
    # the next run started a new engine and wrote the table once: version 0, all rows, no debris of the first try
    assert out.splitlines()[-1] == "SECOND True 0 40", out[-3000:]
    table = tmp_path / "home" / "tables" / "ontos" / "raw" / "probe"
    assert len([p for p in table.iterdir() if p.name.startswith("c-")]) == 1
    replacement = engine.running(tmp_path / "engine")
    assert replacement is not None and replacement.pid != killed.pid


@pytest.mark.parametrize("value", ["x", "spark.a", "other.key=1"])
def test_bad_engine_settings_name_the_variable(monkeypatch, value):
    monkeypatch.setenv("ONTOS_ENGINE_CONF", value)
    with pytest.raises(engine.EngineError, match=r"ONTOS_ENGINE_CONF: .* is not a spark.<setting>=<value> pair"):
        engine.extra_conf()
    monkeypatch.setenv("ONTOS_ENGINE_CORES", "0")
    with pytest.raises(engine.EngineError, match="ONTOS_ENGINE_CORES='0' is not a number of cores"):
        engine.cores()
