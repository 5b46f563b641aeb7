"""Shared by the benchmarks: run a variant in a child process and sample the peak RSS of its process tree."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def engine_processes(home: str | Path | None) -> list[psutil.Process]:
    """The local Spark engine of ONTOS_HOME `home` and its children (it outlives the process that started it, so a
    process tree does not always hold it), [] when none runs."""
    from ontos_pipeline.platform import engine

    found = engine.running(Path(home) / "engine") if home else None
    if found is None:
        return []
    with contextlib.suppress(psutil.Error):
        server = psutil.Process(found.pid)
        return [server, *server.children(recursive=True)]
    return []


def stop_engine(home: str | Path, env: Mapping[str, str] | None = None) -> None:
    """Stop the engine a benchmark's ONTOS_HOME started (`ontos engine stop`; `env`'s ONTOS_ENGINE_HOME, if any,
    names another engine folder)."""
    subprocess.run(
        [sys.executable, "-m", "ontos_pipeline.cli", "engine", "stop"],
        cwd=ROOT,
        capture_output=True,
        env={**(os.environ if env is None else env), "ONTOS_HOME": str(home)},
        check=False,
    )


def run_child(command: list[str], out: Path, label: str, home: str | Path | None = None) -> dict:
    """Run `command` (which writes a JSON dict to `out`); add wall time and the peak RSS of its process tree plus
    the engine of ONTOS_HOME `home` (Python + JVM + Spark's Python workers)."""
    proc = subprocess.Popen(command, cwd=ROOT)
    root, peak, started = psutil.Process(proc.pid), 0, time.perf_counter()
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            tree = {p.pid: p for p in [root, *root.children(recursive=True), *engine_processes(home)]}
            peak = max(peak, sum(p.memory_info().rss for p in tree.values()))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    return {"variant": label, "process_wall_s": wall, "peak_rss_mb": peak / 2**20, **json.loads(out.read_text())}
