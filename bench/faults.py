"""Benchmark: the project's claims (nothing lost, no partial tables, exactly once) measured under faults.

    uv run python bench/faults.py [--writes 20] [--flip-seconds 60] [--feedback 1000] [--home DIR]

Scenarios, each against real processes on this machine (kill -9 is SIGKILL: no handler runs):
1. table writes: a child process does one write (a label file import, a feedback append under the table lock, a
   registry upsert, an inference-log flush of 200 rows) and is killed at a random moment; the table must open, hold
   no duplicate keys, and hold all or none of the batch; then the write is retried (it must be idempotent);
2. `ontos serve` killed with kill -9 under 8 clients, then restarted: inference-log rows must equal the answered
   requests (each once), whatever was still in the spool;
3. the champion alias moved back and forth every 0.5 s under 32 concurrent clients: failed requests;
4. feedback rows written while `dagster-daemon` (the retrain sensor, 1 s ticks) is killed and restarted at random;
   the retrain requests' seq ranges must cover every row exactly once (runs stay queued: the queue holds 0);
5. two label merges of one partition at once (two processes, one Spark engine), repeated: duplicated or lost
   labels.
Prints a table and writes bench/results/faults.json. The plain alternative (no lock, no spool, no run keys) is
what the defects the issue lists were: it is not rerun here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
BIN = Path(sys.executable).parent
TOKEN = "ontos_bench-faults-token-0123456789abcdef"

WRITER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from ontos_pipeline.platform.lakehouse import LocalLakehouse
kind, home, batch, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
lh = LocalLakehouse.under(home)
now = datetime.now(UTC)
if kind == "inference log flush":  # the serving process's own path: spool lines, then a flush commits them
    from ontos_pipeline.deploy.serving.logbook import InferenceLog, recover
    log = InferenceLog(lh, home / "spool", flush_seconds=3600, flush_rows=10**6)
    if mode == "retry":  # what the next `ontos serve` does first
        write = lambda: recover(lh, home / "spool")
    else:
        log.open()
        for i in range(200):
            log.write({"request_id": f"{batch}-{i}", "request_time": now, "endpoint_name": "e", "status_code": 200,
                       "inputs": "x" * 2000})
        write = log.flush
elif kind == "registry upsert":
    rows = [{"event_id": f"{batch}-{i}", "endpoint_name": "e", "use_case": "u", "event": "deploy",
             "served_version": "1", "reason": "r" * 500, "actor": "bench", "created_at": now} for i in range(200)]
    write = lambda: lh.upsert_records("serving_endpoints", rows, keys=["event_id"])
elif kind == "feedback append":
    from ontos_pipeline.label.feedback import Feedback, record_feedback
    from ontos_pipeline.specs import load_use_cases
    spec = load_use_cases(home.parent / "use_cases")["widgets"]
    items = [Feedback("widgets", None, f"{batch}-{i}", "up", None, batch, "bench") for i in range(200)]
    write = lambda: record_feedback(lh, spec, items)
else:  # label file import: the CLI copies the file into the inbox, named by content
    from ontos_pipeline.cli import main
    write = lambda: main(["labels", "import", str(home.parent / f"labels-{batch}.csv"), "--use-case", "widgets"])
print("READY", flush=True)
sys.stdin.readline()  # the parent starts the clock, then kills at a random moment of the write
started = time.perf_counter()
write()
print("DONE", time.perf_counter() - started, flush=True)
"""
RETRIED = {"inference log flush", "registry upsert", "label file import"}  # feedback: a retry is a new submission


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, cases: Path, **extra: str) -> dict:
    return {
        **os.environ,
        "ONTOS_HOME": str(home),
        "ONTOS_USE_CASES_DIR": str(cases),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **extra,
    }


# -- 1. table writes ---------------------------------------------------------------------------------------------
def table_writes(root: Path, trials: int, rng: random.Random) -> dict:
    from deltalake import DeltaTable

    from ontos_pipeline_tests.conftest import WIDGETS_SPEC

    home, cases = root / "writes" / "home", root / "writes" / "use_cases"
    cases.mkdir(parents=True)
    (cases / "widgets.yaml").write_text(WIDGETS_SPEC, encoding="utf-8")
    kinds = ["inference log flush", "registry upsert", "feedback append", "label file import"]
    env = _env(home, cases)
    durations: dict[str, float] = {}
    for kind in kinds:  # the tables exist before the first kill; how long one write takes, to kill inside it
        durations[kind] = _run_writer(kind, home, f"warm{kind[:3]}", env, "write")
    results = []
    for trial in range(trials):
        kind, batch = kinds[trial % len(kinds)], f"b{trial}"
        _label_file(kind, home, batch)
        proc = subprocess.Popen(
            [PY, "-c", WRITER, kind, str(home), batch, "write"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        while proc.stdout.readline().strip() != "READY":
            pass
        proc.stdin.write("go\n")
        proc.stdin.flush()
        delay = rng.uniform(0, 1.2 * durations[kind])
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = _check_write(kind, home, batch, DeltaTable)
        again = state
        if kind in RETRIED:
            _run_writer(kind, home, batch, env, "retry" if kind == "inference log flush" else "write")
            again = _check_write(kind, home, batch, DeltaTable)
        results.append(
            {
                "kind": kind,
                "killed": killed,
                "kill_after_ms": round(delay * 1000),
                "write_ms": round(durations[kind] * 1000),
                "readable": state["readable"] and again["readable"],
                "partial": state["rows"] not in (0, 200) or (kind in RETRIED and again["rows"] != 200),
                "duplicates": state["duplicates"] + again["duplicates"],
                "rows_after_kill": state["rows"],
            }
        )
    return {
        "trials": len(results),
        "killed mid-write": sum(r["killed"] for r in results),
        "unreadable tables": sum(not r["readable"] for r in results),
        "partial batches": sum(r["partial"] for r in results),
        "duplicate rows": sum(r["duplicates"] for r in results),
        "detail": results,
    }


def _run_writer(kind: str, home: Path, batch: str, env: dict, mode: str) -> float:
    """One write to completion; returns how long the write itself took (seconds)."""
    _label_file(kind, home, batch)
    done = subprocess.run(
        [PY, "-c", WRITER, kind, str(home), batch, mode],
        env=env,
        cwd=ROOT,
        input="go\n",
        check=True,
        capture_output=True,
        text=True,
    )
    return float(next(line for line in done.stdout.splitlines() if line.startswith("DONE")).split()[1])


def _label_file(kind: str, home: Path, batch: str) -> None:
    if kind == "label file import":
        home.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"W{batch}-{i},ok\n" for i in range(200))
        (home.parent / f"labels-{batch}.csv").write_text("item_ref,label\n" + lines, encoding="utf-8")


def _check_write(kind: str, home: Path, batch: str, DeltaTable) -> dict:
    if kind == "label file import":
        files = list((home / "files" / "inbox" / "widgets").glob(f"labels-{batch}-*.csv"))
        rows = sum(max(len(f.read_text().splitlines()) - 1, 0) for f in files)  # a file is there whole or not
        return {"readable": True, "rows": rows, "duplicates": max(len(files) - 1, 0) * 200}
    table, key = {
        "inference log flush": ("inference_log", "request_id"),
        "registry upsert": ("serving_endpoints", "event_id"),
        "feedback append": ("feedback", "item_ref"),
    }[kind]
    path = home / "tables" / "ontos" / "workbench" / table
    if not (path / "_delta_log").exists():
        return {"readable": True, "rows": 0, "duplicates": 0}
    try:
        frame = DeltaTable(str(path)).to_pandas(columns=[key])
    except Exception:
        return {"readable": False, "rows": -1, "duplicates": 0}
    mine = frame[frame[key].astype(str).str.startswith(f"{batch}-")]
    duplicates = int(mine[key].duplicated().sum())
    if kind == "feedback append":  # seq stays gap-free: a high-water mark that skipped rows would lose them
        seq = DeltaTable(str(path)).to_pandas(columns=["seq"])["seq"]
        duplicates += int(seq.duplicated().sum()) + int(seq.max() - len(seq))
    return {"readable": True, "rows": len(mine), "duplicates": duplicates}


# -- 2 and 3. serving ---------------------------------------------------------------------------------------------
def _serving_home(root: Path) -> tuple[Path, Path, list[str], list[dict]]:
    """A home whose registry holds two versions of a small enum model (as test_serving builds it)."""
    from ontos_pipeline.train.trainer.local import RESPONSE
    from ontos_pipeline_tests.kinds import items, registered_enum_versions

    home, cases = root / "serving" / "home", root / "serving" / "use_cases"
    cases.mkdir(parents=True)
    _, _, versions = registered_enum_versions(cases, home)
    records = json.loads(items("enum", 200, 9).drop(columns=[RESPONSE]).to_json(orient="records"))
    return home, cases, versions, records


def _serve(home: Path, cases: Path, port: int, log: Path) -> subprocess.Popen:
    env = _env(home, cases, ONTOS_SERVE_TOKEN=TOKEN)
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_") or k == "MLFLOW_DISABLE_TELEMETRY"}
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [str(BIN / "ontos"), "serve", "--port", str(port), "--poll-seconds", "0.2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if (
                requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["endpoints"].get("enum_case")
                == "READY"
            ):
                return proc
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"ontos serve did not come up; see {log}")


def _clients(url: str, records: list[dict], n: int, stop: threading.Event) -> tuple[list, Counter]:
    answered, failures, lock = [], Counter(), threading.Lock()

    def client(k: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        i = k
        while not stop.is_set():
            try:
                r = session.post(url, json={"dataframe_records": [records[i % len(records)]]}, timeout=30)
                with lock:
                    if r.status_code == 200:
                        answered.append((r.headers["x-request-id"], r.headers.get("x-model-version")))
                    else:
                        failures[r.status_code] += 1
            except requests.RequestException as exc:
                with lock:
                    failures[type(exc).__name__] += 1
            i += n

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    return answered, failures, threads


def serve_killed(root: Path, home: Path, cases: Path, records: list[dict], rng: random.Random) -> dict:
    from ontos_pipeline.platform.lakehouse import LocalLakehouse

    port, log = _port(), root / "serve-kill.log"
    proc = _serve(home, cases, port, log)
    stop = threading.Event()
    answered, failures, threads = _clients(
        f"http://127.0.0.1:{port}/serving-endpoints/enum_case/invocations", records, 8, stop
    )
    time.sleep(rng.uniform(4, 8))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    before = len(LocalLakehouse.under(home).records("inference_log", columns=["request_id"]))
    restarted = _serve(home, cases, port, log)  # recovers the dead process's spool
    os.killpg(restarted.pid, signal.SIGINT)
    restarted.wait(timeout=120)
    ids = [r["request_id"] for r in LocalLakehouse.under(home).records("inference_log", columns=["request_id"])]
    answered_ids = {rid for rid, _ in answered}
    return {
        "answered requests": len(answered_ids),
        "logged before the restart": before,
        "logged after": len(set(ids) & answered_ids),
        "answered but not logged": len(answered_ids - set(ids)),
        "duplicate log rows": len(ids) - len(set(ids)),
        "client errors at the kill": sum(failures.values()),
    }


def alias_flips(root: Path, home: Path, cases: Path, versions: list[str], records: list[dict], seconds: float) -> dict:
    from ontos_pipeline.platform.model_store import CHAMPION, local_store

    port = _port()
    proc = _serve(home, cases, port, root / "serve-flip.log")
    store = local_store(home).activate()
    stop = threading.Event()
    answered, failures, threads = _clients(
        f"http://127.0.0.1:{port}/serving-endpoints/enum_case/invocations", records, 32, stop
    )
    flips, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.set_alias("enum_case", CHAMPION, versions[(flips + 1) % 2])
        flips += 1
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    return {
        "seconds": seconds,
        "clients": 32,
        "alias moves": flips,
        "requests": len(answered) + sum(failures.values()),
        "failed requests": sum(failures.values()),
        "versions served": dict(Counter(v for _, v in answered)),
    }


# -- 4. feedback exactly once under daemon restarts ----------------------------------------------------------------
DAGSTER_YAML = """telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 0  # the bench counts the sensor's requests; the retrains themselves stay queued
"""


def feedback_exactly_once(root: Path, total: int, rng: random.Random, seconds: float = 120.0) -> dict:
    from dagster import DagsterInstance

    from ontos_pipeline.demo.daemon import SENSOR_TAG
    from ontos_pipeline.label.feedback import Feedback, record_feedback
    from ontos_pipeline.platform.lakehouse import LocalLakehouse
    from ontos_pipeline.specs import load_use_cases
    from ontos_pipeline_tests.conftest import DEMO_USE_CASES

    home, cases = root / "sensor" / "home", root / "sensor" / "use_cases"
    cases.mkdir(parents=True)
    text = (DEMO_USE_CASES / "predictive_maintenance.yaml").read_text()
    text = re.sub(r"min_actionable_feedback: \d+", "min_actionable_feedback: 1", text)
    (cases / "predictive_maintenance.yaml").write_text(text, encoding="utf-8")
    spec = load_use_cases(cases)["predictive_maintenance"]
    if spec.retrain.min_actionable_feedback != 1:
        raise SystemExit("could not lower predictive_maintenance's retrain threshold for the bench")
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.get_runs()  # storage created before the daemon opens it
    env = _env(home, cases, DAGSTER_HOME=str(dagster_home), ONTOS_SENSOR_INTERVAL="1")
    lakehouse = LocalLakehouse.under(home)
    restarts, written, log = 0, 0, root / "daemon.log"

    def daemon() -> subprocess.Popen:
        with open(log, "a") as out:
            return subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-m", "ontos_pipeline.definitions"],
                env=env,
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ticks() -> int:
        return log.read_text(errors="replace").count("Checking for new runs for sensor") if log.exists() else 0

    pace = seconds / (total / 22.5)  # batches of 5-40 rows
    proc, seen_ticks, kill_at = daemon(), ticks(), None
    while written < total:
        n = min(rng.randint(5, 40), total - written)
        items = [Feedback(spec.name, None, f"PM-{written + i}", "down", None, None, "bench") for i in range(n)]
        record_feedback(lakehouse, spec, items)
        written += n
        time.sleep(rng.uniform(0.5, 1.5) * pace)  # arrivals spread over `seconds`: a dozen daemon lives
        if kill_at is None and ticks() > seen_ticks:  # this daemon has ticked: kill it at a random moment soon
            kill_at = time.monotonic() + rng.uniform(0, 2.5)
        if kill_at is not None and time.monotonic() > kill_at:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            restarts += 1
            proc, seen_ticks, kill_at = daemon(), ticks(), None
    deadline = time.monotonic() + 180
    ranges: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        ranges = sorted(
            (int(r.tags["ontos/feedback_seq_from"]), int(r.tags["ontos/feedback_seq_to"]))
            for r in runs
            if r.tags.get(SENSOR_TAG)
        )
        if ranges and ranges[-1][1] == total:
            break
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    counted = Counter(seq for lo, hi in ranges for seq in range(lo, hi + 1))
    instance.dispose()
    return {
        "feedback rows": total,
        "daemon killed and restarted": restarts,
        "retrain requests": len(ranges),
        "rows counted once": sum(1 for s in range(1, total + 1) if counted[s] == 1),
        "rows counted twice or more": sum(1 for s in range(1, total + 1) if counted[s] > 1),
        "rows never counted": sum(1 for s in range(1, total + 1) if counted[s] == 0),
    }


# -- 5. two merges at once ----------------------------------------------------------------------------------------
MERGER = """
import sys
from pathlib import Path
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.spark_session import get_spark
from ontos_pipeline.data.sheet import current_sheet
from ontos_pipeline.label.labels import merge_labels
from ontos_pipeline.specs import load_use_cases
home, cases = Path(sys.argv[1]), Path(sys.argv[2])
spark, lakehouse = get_spark(), LocalLakehouse.under(home)
spec = load_use_cases(cases)["widgets"]
print("APPENDED", merge_labels(spark, lakehouse, spec, current_sheet(lakehouse, "widgets")).appended)
"""


def concurrent_merges(root: Path, rounds: int) -> dict:
    from ontos_pipeline.data.sheet import build_sheet
    from ontos_pipeline.platform.lakehouse import LocalLakehouse
    from ontos_pipeline.platform.spark_session import get_spark
    from ontos_pipeline_tests.conftest import WIDGETS_SPEC
    from ontos_pipeline_tests.widgets import good_widgets, widgets_spec, write_labels, write_widgets

    home, cases = root / "merge" / "home", root / "merge" / "use_cases"
    cases.mkdir(parents=True)
    (cases / "widgets.yaml").write_text(WIDGETS_SPEC, encoding="utf-8")
    spark, lakehouse = get_spark(), LocalLakehouse.under(home)
    spec = widgets_spec(cases)
    write_widgets(spark, lakehouse, good_widgets(home))
    build_sheet(spark, lakehouse, spec)
    env = _env(home, cases)
    duplicated = lost = 0
    expected: set[str] = set()
    for k in range(rounds):
        label = "ok" if k % 2 == 0 else "not_ok"  # every round changes every label: both runs want to append
        write_labels(spark, lakehouse, [(f"W{i}", label, f"qa{k}") for i in range(1, 5)])
        procs = [
            subprocess.Popen(
                [PY, "-c", MERGER, str(home), str(cases)], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"a merge failed: {outs}")
        rows = lakehouse.records("canonical_labels", columns=["item_ref", "version"])
        versions = Counter((r["item_ref"], r["version"]) for r in rows)
        duplicated += sum(n - 1 for n in versions.values() if n > 1)
        expected = {f"W{i}" for i in range(1, 5)}
        lost += len(expected - {i for i, v in versions if v == k + 1})
    return {"rounds": rounds, "merges": 2 * rounds, "duplicated labels": duplicated, "lost labels": lost}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--flip-seconds", type=float, default=60.0)
    parser.add_argument("--feedback", type=int, default=1000)
    parser.add_argument("--feedback-seconds", type=float, default=120.0, help="how long the feedback arrives")
    parser.add_argument("--merges", type=int, default=4)
    parser.add_argument("--home", help="work folder (default: a fresh temporary one)")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    root = Path(args.home or tempfile.mkdtemp(prefix="ontos-bench-faults-"))
    os.environ["ONTOS_ENGINE_HOME"] = str(root / "engine")  # one Spark engine for this process and its children
    rng = random.Random(args.seed)
    results, started = {}, time.perf_counter()
    t = time.perf_counter()
    results["1 table writes killed"] = table_writes(root, args.writes, rng) | {
        "seconds": round(time.perf_counter() - t)
    }
    t = time.perf_counter()
    home, cases, versions, records = _serving_home(root)
    results["2 ontos serve killed"] = serve_killed(root, home, cases, records, rng) | {
        "seconds": round(time.perf_counter() - t)
    }
    t = time.perf_counter()
    results["3 alias moves"] = alias_flips(root, home, cases, versions, records, args.flip_seconds)
    t = time.perf_counter()
    results["4 feedback, daemon restarts"] = feedback_exactly_once(root, args.feedback, rng, args.feedback_seconds) | {
        "seconds": round(time.perf_counter() - t)
    }
    t = time.perf_counter()
    try:
        results["5 two merges at once"] = concurrent_merges(root, args.merges) | {
            "seconds": round(time.perf_counter() - t)
        }
    finally:
        from ontos_pipeline.platform import engine

        engine.stop(root / "engine")  # the engine this bench started
    print(f"\nfaults ({platform.node()}, {os.cpu_count()} cores, {time.perf_counter() - started:.0f} s)")
    for name, figures in results.items():
        shown = {k: v for k, v in figures.items() if k != "detail"}
        print(f"  {name:30} " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    out = ROOT / "bench" / "results" / "faults.json"
    out.write_text(json.dumps({"machine": platform.node(), "cores": os.cpu_count(), **results}, indent=1, default=str))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
