"""Benchmark: what running steps as Databricks runs costs the orchestrator, against running them in-process.

    uv run python bench/databricks_steps.py [--use-case NAME] [--rows N]

Runs the `full_pipeline` job of one use case twice in fresh homes: in-process (the local target), and with
ONTOS_TARGET=databricks against the fake workspace of the test suite (`ontos_pipeline_tests/fake_workspace.py`),
whose runs are local processes with the embedded data plane. Per asset it reports the Dagster step's wall time on
both, the time the fake's run took (process start to exit: Python imports, Spark start, the step), the rest
(the orchestrator's own overhead: code upload, Pipes context and message files, polling) and the REST requests the
step made. Cluster start-up on a real workspace (minutes for a job cluster, seconds for serverless or an existing
cluster) is not in these numbers. Prints a table and writes bench/results/databricks_steps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dagster import DagsterInstance  # noqa: E402

from ontos_pipeline.definitions import build_definitions  # noqa: E402
from ontos_pipeline.pipeline import FULL_PIPELINE  # noqa: E402
from ontos_pipeline.settings import Settings, default_use_cases_dir  # noqa: E402
from ontos_pipeline_tests.fake_workspace import FakeWorkspace  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def step_seconds(result) -> dict[str, float]:
    return {
        e.step_key: e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }


def run(target: str, home: Path, use_case: str, rows: int):
    settings = Settings(target, home, "ontos", "workbench", default_use_cases_dir())
    job = build_definitions(settings).resolve_job_def(FULL_PIPELINE)
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=use_case,
        instance=DagsterInstance.ephemeral(),
        run_config={
            "ops": {"sources": {"config": {"rows": rows}}},
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
        },
    )
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--use-case", default="predictive_maintenance")
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="ontos-bench-dbx-") as tmp:
        tmp = Path(tmp)
        local, local_total = run("local", tmp / "local", args.use_case, args.rows)
        env = {
            "ONTOS_TARGET": "local",
            "ONTOS_HOME": str(tmp / "cluster"),
            "DATABRICKS_HOST": "",
            "DATABRICKS_TOKEN": "",
        }
        with FakeWorkspace(tmp / "workspace", cluster_env=env) as ws:
            os.environ.update(
                {
                    "DATABRICKS_HOST": ws.url,
                    "DATABRICKS_TOKEN": ws.token,
                    "DATABRICKS_AUTH_TYPE": "pat",
                    "ONTOS_DATABRICKS_VOLUME": "/Volumes/ontos/workbench/ontos",
                    "ONTOS_DATABRICKS_POLL_SECONDS": "0.5",
                }
            )
            remote, remote_total = run("databricks", tmp / "orchestrator", args.use_case, args.rows)
            runs = {}
            for run_id, state in ws.runs.items():
                name = state["submit"]["run_name"].split(" [")[0].removeprefix("ontos ")
                runs[name] = {"run_s": (state["end_time"] - state["start_time"]) / 1000, "run_id": run_id}
            requests_by_run: dict[str, int] = {}
            groups: list[list] = []
            for call in ws.requests:  # each step starts by checking whether the code is on the volume
                if (call.method == "HEAD" and "/code/run-step-" in call.path) or not groups:
                    groups.append([])
                groups[-1].append(call)
            for group in groups:
                submit = next((c for c in group if c.path.endswith("/runs/submit")), None)
                if submit is not None:
                    requests_by_run[submit.body["run_name"].split(" [")[0].removeprefix("ontos ")] = len(group)
            total_requests = len(ws.requests)
    local_steps, remote_steps = step_seconds(local), step_seconds(remote)
    rows = []
    for step, seconds in local_steps.items():
        r = runs.get(step, {})
        remote_s = remote_steps.get(step)
        rows.append(
            {
                "step": step,
                "in_process_s": seconds,
                "databricks_step_s": remote_s,
                "run_s": r.get("run_s"),
                "orchestrator_overhead_s": remote_s - r["run_s"] if remote_s and r else None,
                "requests": requests_by_run.get(step, 0),
            }
        )

    def fmt(v):
        return "-" if v is None else f"{v:,.1f}" if isinstance(v, float) else str(v)

    print(
        f"\nsteps as Databricks runs (fake workspace) vs in-process: {args.use_case}, {args.rows:,} items, "
        f"{os.cpu_count()} cores\n"
    )
    print(
        f"{'step':<20}{'in-process s':>14}{'databricks s':>14}{'of which run s':>16}{'overhead s':>12}{'requests':>10}"
    )
    for r in rows:
        print(
            f"{r['step']:<20}{fmt(r['in_process_s']):>14}{fmt(r['databricks_step_s']):>14}{fmt(r['run_s']):>16}"
            f"{fmt(r['orchestrator_overhead_s']):>12}{r['requests']:>10}"
        )
    print(f"{'job total':<20}{fmt(local_total):>14}{fmt(remote_total):>14}{'':>16}{'':>12}{total_requests:>10}")
    print(f"\nratio databricks / in-process (job): {remote_total / local_total:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "databricks_steps.json"
    path.write_text(
        json.dumps(
            {
                "use_case": args.use_case,
                "rows": args.rows,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "steps": rows,
                "in_process_total_s": local_total,
                "databricks_total_s": remote_total,
                "requests": total_requests,
            },
            indent=2,
        )
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
