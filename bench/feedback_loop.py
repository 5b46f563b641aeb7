"""Benchmark: feedback-to-champion latency, through the sensor and the daemon vs a direct in-process retrain.

    uv run python bench/feedback_loop.py [--use-case NAME] [--interval S] [--home DIR]

Setup (not timed): the `full_pipeline` job for one use case at the spec's default size in a fresh ONTOS_HOME
(persistent Dagster instance), `ontos serve` (alias poll 1 s) and `dagster-daemon run` with the retrain sensor's
interval set to S; the sensor has ticked once before the clock starts, as a daemon that is always on would have.

Round 1, ours: the drifted batch lands in the source table and half of it is sent as traffic with feedback (90% of
answers rated, 90% of wrong ones corrected). The clock starts when the last feedback batch is committed and stops when
the endpoint answers with a new version; the run's own timestamps split the time into sensor wait, queue and launch,
the run itself, and the hot swap.
Round 2, plain: the other half of the drifted batch with feedback, then what a user without a sensor would write: the
`retrain` job executed in-process right away, until the endpoint answers with a new version.
Prints a table and writes bench/results/feedback_loop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ontos_pipeline.demo.daemon import DaemonProcess, sensor_cursor, sensor_runs  # noqa: E402
from ontos_pipeline.demo.run import ServingProcess  # noqa: E402
from ontos_pipeline.instance import prepare_dagster_home  # noqa: E402
from ontos_pipeline.settings import load_settings  # noqa: E402


def _served_version(url: str, endpoint: str, token: str) -> str | None:
    auth = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{url}/serving-endpoints/{endpoint}", headers=auth, timeout=10).json().get("served_version")


def _wait_for_new_version(url: str, endpoint: str, token: str, old: str, timeout: float = 3600) -> tuple[float, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = _served_version(url, endpoint, token)
        if version not in (None, old):
            return time.time(), version
        time.sleep(0.25)
    raise SystemExit(f"{endpoint} still serves version {old} after {timeout:.0f} s (did the gate keep it?)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--use-case", default="predictive_maintenance")
    parser.add_argument("--interval", type=int, default=5, help="retrain sensor interval, seconds")
    parser.add_argument("--home", help="ONTOS_HOME (default: a fresh temporary folder)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="ontos-bench-loop-"))
    os.environ.update(ONTOS_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true", ONTOS_SENSOR_INTERVAL=str(args.interval))
    settings = load_settings()
    prepare_dagster_home(settings)

    from dagster import DagsterInstance

    from ontos_pipeline.definitions import build_definitions
    from ontos_pipeline.demo import traffic
    from ontos_pipeline.pipeline import FULL_PIPELINE, RETRAIN
    from ontos_pipeline.platform.spark_session import get_spark

    instance = DagsterInstance.get()
    defs = build_definitions(settings)
    spec = defs.resources["use_cases"].get(args.use_case)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    t = time.perf_counter()
    assert (
        defs.resolve_job_def(FULL_PIPELINE)
        .execute_in_process(partition_key=spec.name, instance=instance, run_config=quiet)
        .success
    )
    print(f"setup: full_pipeline of {spec.name} in {time.perf_counter() - t:.0f} s", flush=True)
    lakehouse, spark = settings.local_lakehouse(), get_spark()
    batch = traffic.items(spark, lakehouse, spec, "drifted", 10_000)
    traffic.land_batch(spark, lakehouse, spec, "drifted")
    halves = batch.iloc[: len(batch) // 2], batch.iloc[len(batch) // 2 :]
    endpoint, results = spec.serving.endpoint_name, {}
    with ServingProcess(settings, [endpoint]) as serving, DaemonProcess(settings, args.interval) as daemon:
        url = serving.url
        while sensor_cursor(instance) is None:  # the daemon is up and its sensor has ticked
            daemon.check()
            time.sleep(0.5)
        for label, half in (("sensor + daemon (ours)", halves[0]), ("direct in-process retrain (plain)", halves[1])):
            old = _served_version(url, endpoint, serving.token)
            sent = traffic.send(url, spec, half, 0.9, 0.9, seed=len(results), token=serving.token)
            written = time.time()
            since = datetime.now(UTC)
            if label.startswith("direct"):
                started = time.time()
                defs.resolve_job_def(RETRAIN).execute_in_process(
                    partition_key=spec.name, instance=instance, run_config=quiet, raise_on_error=False
                )
                created = started
                ended = time.time()
            answered, version = _wait_for_new_version(url, endpoint, serving.token, old)
            if label.startswith("sensor"):
                run = sensor_runs(instance, since)[-1]
                record = instance.get_run_record_by_id(run.run_id)
                created, started, ended = record.create_timestamp.timestamp(), record.start_time, record.end_time
            results[label] = {
                "feedback": dict(sent.feedback),
                "actionable": sent.feedback["down"] + sent.feedback["correction"],
                "from_version": old,
                "to_version": version,
                "total_s": answered - written,
                "until_run_requested_s": created - written,
                "queue_and_launch_s": started - created,
                "run_s": ended - started,
                "hot_swap_s": answered - ended,
            }
            r = results[label]
            print(f"  {label}: v{old} -> v{version} in {r['total_s']:.1f} s", flush=True)

    keys = [
        ("total_s", "feedback committed -> new version answers"),
        ("until_run_requested_s", "until run requested"),
        ("queue_and_launch_s", "queue and launch"),
        ("run_s", "retrain run"),
        ("hot_swap_s", "hot swap"),
    ]
    ours, plain = results.values()
    print(f"\n{spec.name}, sensor interval {args.interval} s, alias poll 1 s\n")
    print("| seconds | sensor + daemon (ours) | direct in-process (plain) | ours / plain |\n|---|---|---|---|")
    for key, title in keys:
        ratio = f"{ours[key] / plain[key]:.2f}" if plain[key] > 0.05 else ""
        print(f"| {title} | {ours[key]:.1f} | {plain[key]:.1f} | {ratio} |")
    print(f"| actionable feedback | {ours['actionable']} | {plain['actionable']} | |")
    out = ROOT / "bench" / "results" / "feedback_loop.json"
    out.write_text(
        json.dumps(
            {
                "use_case": spec.name,
                "rows": spec.synthetic.rows if spec.synthetic else None,
                "sensor_interval_s": args.interval,
                "alias_poll_s": 1,
                "results": results,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {out}")
    if not args.home:
        from ontos_pipeline.platform import engine

        engine.stop(home / "engine")  # the engine this fresh ONTOS_HOME started


if __name__ == "__main__":
    main()
