"""Shared by the benchmarks: run a variant in a child process and sample the peak RSS of its process tree."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def run_child(command: list[str], out: Path, label: str) -> dict:
    """Run `command` (which writes a JSON dict to `out`); add wall time and the tree's peak RSS (Python + JVM)."""
    proc = subprocess.Popen(command, cwd=ROOT)
    root, peak, started = psutil.Process(proc.pid), 0, time.perf_counter()
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    return {"variant": label, "process_wall_s": wall, "peak_rss_mb": peak / 2**20, **json.loads(out.read_text())}
