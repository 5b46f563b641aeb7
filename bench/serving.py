"""Benchmark: our serving process (inference log on) vs `mlflow models serve`, same model version, side by side.

    uv run python bench/serving.py [--requests N] [--home DIR]

Setup (timed, not compared): the `full_pipeline` job for remaining_useful_life in a fresh ONTOS_HOME, which
registers and deploys version 1 (alias `champion`). Then both servers run as child processes on 127.0.0.1, one
uvicorn worker each, on the same model URI. Per server and concurrency (1, 8, 32): warm-up requests, then N
requests of one record each (real held-out items), from that many client threads, each with its own keep-alive
connection; client-side latency per request. Ours is stopped gracefully at the end (SIGINT) and its
`inference_log` rows are counted against the requests it answered. Prints a table, writes
bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
USE_CASE, MODEL = "remaining_useful_life", "ontos.workbench.remaining_useful_life"
CONCURRENCY = (1, 8, 32)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(home: Path) -> list[dict]:
    """Train and deploy the model; return held-out records (item columns as JSON values)."""
    script = f"""
import json
from dagster import DagsterInstance
from ontos_pipeline.definitions import build_definitions
from ontos_pipeline.settings import load_settings
from ontos_pipeline.platform.spark_session import get_spark
from ontos_pipeline.demo import traffic
s = load_settings({{"ONTOS_HOME": {str(home)!r}}})
defs = build_definitions(s)
res = defs.resolve_job_def("full_pipeline").execute_in_process(partition_key={USE_CASE!r},
    instance=DagsterInstance.ephemeral(), run_config={{"ops": {{"sources": {{"config": {{"rows": 2000}}}}}}}})
assert res.success
lh = defs.resources["lakehouse"].get()
spec = defs.resources["use_cases"].get({USE_CASE!r})
frame = traffic.items(get_spark(), lh, spec, "normal", 200).drop(columns=[traffic.TRUTH])
print("RECORDS " + frame.to_json(orient="records", date_format="iso"))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        check=False,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RECORDS ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"setup failed:\n{out.stderr[-3000:]}")
    records = json.loads(line.removeprefix("RECORDS "))
    for r in records:  # dates as YYYY-MM-DD, as a client sends them
        r["snapshot_date"] = str(r["snapshot_date"])[:10]
    return records


def _start(command: list[str], env: dict, ready: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{command[:4]} exited with {proc.returncode}; see {log}")
        try:
            r = requests.get(ready, timeout=2)
            if r.status_code == 200 and (
                not ready.endswith("/health") or r.json()["endpoints"].get(USE_CASE) == "READY"
            ):
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{command[:4]} not ready after 300 s; see {log}")


def _load(url: str, records: list[dict], concurrency: int, total: int, token: str) -> dict:
    auth = {"Authorization": f"Bearer {token}"}  # ontos serve needs it; mlflow ignores it
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_thread = total // concurrency

    def client(k: int) -> None:
        session = requests.Session()
        session.headers.update(auth)
        mine, bad = [], 0
        for i in range(per_thread):
            body = {"dataframe_records": [records[(k * per_thread + i) % len(records)]]}
            t = time.perf_counter()
            r = session.post(url, json=body, timeout=120)
            mine.append((time.perf_counter() - t) * 1000)
            bad += r.status_code != 200
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    for i in range(20):  # warm-up
        requests.post(url, json={"dataframe_records": [records[i % len(records)]]}, headers=auth, timeout=120)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "errors": errors[0],
        "warmup": 20,
    }


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=960, help="measured requests per server and concurrency")
    parser.add_argument("--home", help="ONTOS_HOME to use (default: a fresh temporary folder)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="ontos-bench-serving-"))
    load_start = os.getloadavg()
    t = time.perf_counter()
    records = _setup(home)
    print(f"setup (pipeline + deploy of {USE_CASE}) {time.perf_counter() - t:.0f} s; {len(records)} held-out items")
    token = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "ONTOS_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "ONTOS_SERVE_TOKEN": token,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow/mlflow.db",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    bin_dir = Path(sys.executable).parent
    rows, answered = [], 0
    ours_port, theirs_port = _port(), _port()
    servers = {
        "ontos serve (log on)": (
            [str(bin_dir / "ontos"), "serve", "--port", str(ours_port)],
            f"http://127.0.0.1:{ours_port}/health",
            f"http://127.0.0.1:{ours_port}/serving-endpoints/{USE_CASE}/invocations",
        ),
        "mlflow models serve": (
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{MODEL}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(theirs_port),
                "-w",
                "1",
            ],
            f"http://127.0.0.1:{theirs_port}/ping",
            f"http://127.0.0.1:{theirs_port}/invocations",
        ),
    }
    log_share = None
    for label, (command, ready, url) in servers.items():
        proc = _start(command, env, ready, home / f"{label.split()[0]}.log")
        try:
            for c in CONCURRENCY:
                result = _load(url, records, c, args.requests, token)
                rows.append({"server": label, "concurrency": c, **result})
                print(
                    f"  {label:22} c={c:<3} {result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f} ms  "
                    f"p99 {result['p99_ms']:7.1f} ms  errors {result['errors']}",
                    flush=True,
                )
                answered += (result["requests"] + result["warmup"]) if label.startswith("ontos") else 0
        finally:
            _stop(proc)
        if label.startswith("ontos"):
            sys.path.insert(0, str(ROOT))
            from ontos_pipeline.platform.lakehouse import LocalLakehouse

            logged = len(LocalLakehouse(home / "tables").records("inference_log", columns=["request_id"]))
            log_share = logged / answered
    by = {(r["server"], r["concurrency"]): r for r in rows}
    print(
        "\n| concurrency | ours req/s | mlflow req/s | ratio | ours p50 ms | mlflow p50 ms | ours p99 ms | "
        "mlflow p99 ms |\n|---|---|---|---|---|---|---|---|"
    )
    ours, theirs = list(servers)
    for c in CONCURRENCY:
        a, b = by[(ours, c)], by[(theirs, c)]
        print(
            f"| {c} | {a['rps']:.1f} | {b['rps']:.1f} | {a['rps'] / b['rps']:.2f} | {a['p50_ms']:.1f} | "
            f"{b['p50_ms']:.1f} | {a['p99_ms']:.1f} | {b['p99_ms']:.1f} |"
        )
    print(f"\nrequests logged by ours: {log_share:.1%} of {answered} answered")
    out = ROOT / "bench" / "results" / "serving.json"
    out.write_text(
        json.dumps(
            {
                "use_case": USE_CASE,
                "model": f"{MODEL}@champion (version 1)",
                "rows": rows,
                "logged_share": log_share,
                "answered_by_ours": answered,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg(),
                },
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
