"""Benchmark: where the time of a command goes, for one CLI command, one single-asset materialization and one
`full_pipeline` run, each profiled as a whole process with pyinstrument and Spark's own event log.

    uv run python bench/profile_steps.py --home DIR [--label after] [--python PY --cwd CHECKOUT]

DIR is an ONTOS_HOME holding the demo's state (`ontos demo`); it is copied first, so nothing in it changes. With
`--python`/`--cwd` the same three commands run in another checkout (e.g. the release before this change, with its
own virtual environment), which is how bench/README.md compares before and after. The time of each process is
split by what its Python stack was doing, the first matching of:

    JVM start > imports > Spark (jobs and plan analysis, as the client waits on them) > Delta (delta-rs reads and
    commits) > MLflow > Dagster event writes (instance storage) > definitions build > scikit-learn > other

Spark's own job time comes from its event log (jobs, their summed duration). Prints a table and writes
bench/results/profile_steps_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("jvm_start", "imports", "spark", "delta", "mlflow", "dagster_events", "definitions", "sklearn", "other")


def classify(frame: dict, seen: frozenset[str], depth: int) -> frozenset[str]:
    """The categories the stack is in once `frame` is on it (pyinstrument drops importlib's frames: module-level
    code below the entry script's is an import)."""
    path, func = frame.get("file_path") or "", frame.get("function") or ""
    found = set(seen)
    if (func in ("launch_gateway", "_start") and ("java_gateway" in path or "engine.py" in path)) or (
        func == "getOrCreate" and path.endswith("pyspark/sql/session.py")
    ):  # JVM start + SparkContext
        found.add("jvm_start")
    if func == "<module>" and depth > 0:
        found.add("imports")
    if "/py4j/" in path or "/pyspark/sql/connect/client/" in path or "/grpc/" in path:
        found.add("spark")
    if "/deltalake/" in path:
        found.add("delta")
    if "/mlflow/" in path:
        found.add("mlflow")
    if "/dagster/_core/storage/" in path or ("/dagster/_core/instance/" in path and "event" in func):
        found.add("dagster_events")
    if func == "build_definitions":
        found.add("definitions")
    if "/sklearn/" in path:
        found.add("sklearn")
    return frozenset(found)


def breakdown(profile: dict) -> dict[str, object]:
    """Seconds per category: each frame's own time goes to the highest-priority category on its stack; plus the
    functions where most of the uncategorized time was spent."""
    out: dict[str, object] = dict.fromkeys(CATEGORIES, 0.0)
    other: dict[str, float] = {}
    spark_by_caller: dict[str, float] = {}
    stack = [(profile["root_frame"], frozenset(), 0, "")]
    while stack:
        frame, seen, depth, caller = stack.pop()
        seen = classify(frame, seen, depth)
        if "ontos_pipeline/" in (frame.get("file_path") or "") and "spark" not in seen:
            caller = f"{frame.get('function')} ({frame.get('file_path_short')})"
        children = frame.get("children") or []
        own = max(frame["time"] - sum(c["time"] for c in children), 0.0)
        category = next((c for c in CATEGORIES if c in seen), "other")
        out[category] += own
        if category == "other":
            key = f"{frame.get('function')} ({frame.get('file_path_short')})"
            other[key] = other.get(key, 0.0) + own
        if category == "spark":
            spark_by_caller[caller] = spark_by_caller.get(caller, 0.0) + own
        stack.extend((c, seen, depth + 1, caller) for c in children)
    out["top_other"] = _top(other)
    out["spark_by_caller"] = _top(spark_by_caller, 15)
    return out


def _top(seconds: dict[str, float], n: int = 10) -> list[tuple[str, float]]:
    return sorted(((k, round(v, 2)) for k, v in seconds.items()), key=lambda kv: -kv[1])[:n]


def spark_jobs(events_dir: Path, since: float, until: float) -> dict[str, float]:
    """Jobs submitted between `since` and `until` (epoch seconds) and their summed wall time, from Spark's event
    logs in `events_dir` (the engine's log covers every command; each command counts the jobs of its window)."""
    starts, total, jobs = {}, 0.0, 0
    for log in (p for p in events_dir.rglob("*") if p.is_file()):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"SparkListenerJob' not in line:
                continue
            event = json.loads(line)
            key = (log.name, event.get("Job ID"))
            if event["Event"] == "SparkListenerJobStart" and since <= event["Submission Time"] / 1000 <= until:
                starts[key] = event["Submission Time"]
            elif event["Event"] == "SparkListenerJobEnd" and key in starts:
                total += (event["Completion Time"] - starts.pop(key)) / 1000
                jobs += 1
    return {"spark_jobs": jobs, "spark_job_s": total}


def event_log_env(env: dict, events: Path) -> dict:
    """`env` with Spark's event log on, for the engine and for in-process Spark (the release before the engine)."""
    conf = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": f"file://{events}",
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    return {
        **env,
        "ONTOS_ENGINE_CONF": " ".join(f"{k}={v}" for k, v in conf.items()),
        "PYSPARK_SUBMIT_ARGS": " ".join(f"--conf {k}={v}" for k, v in conf.items()) + " pyspark-shell",
    }


def profiled(python: str, cwd: Path, env: dict, argv: list[str], out: Path, events: Path) -> dict:
    since, started = time.time(), time.perf_counter()
    done = subprocess.run(
        [
            python,
            "-m",
            "pyinstrument",
            "-r",
            "json",
            "-p",
            "processor_options.filter_threshold=0",
            "-o",
            str(out),
            *argv,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    time.sleep(1.0)  # the event log is flushed as jobs end; give the last one a moment
    return {"wall_s": wall, **breakdown(json.loads(out.read_text())), **spark_jobs(events, since, time.time())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="an ONTOS_HOME with the demo's state (copied, not changed)")
    parser.add_argument("--label", default="after")
    parser.add_argument("--python", default=sys.executable, help="the Python of the checkout to profile")
    parser.add_argument("--cwd", default=str(ROOT), help="the checkout to profile")
    parser.add_argument("--use-case", default="predictive_maintenance")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ontos-profile-"))
    home = work / "home"
    shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("engine"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ONTOS_", "DAGSTER_"))}
    env.update(
        ONTOS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        ONTOS_ENGINE_HOME=str(work / "engine"),
        MLFLOW_DISABLE_TELEMETRY="true",
        DAGSTER_DISABLE_TELEMETRY="true",
    )
    events = work / "spark-events"
    events.mkdir()
    env = event_log_env(env, events)
    bin_dir = str(Path(args.python).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    partition = json.dumps({"dagster/partition": args.use_case})
    commands = {
        "ontos tasks list": ["ontos_pipeline.cli", "tasks", "list"],
        f"dagster asset materialize --select template ({args.use_case})": [
            "dagster",
            "asset",
            "materialize",
            "-m",
            "ontos_pipeline.definitions",
            "--select",
            "template",
            "--partition",
            args.use_case,
        ],
        f"full_pipeline ({args.use_case})": [
            "dagster",
            "job",
            "execute",
            "-m",
            "ontos_pipeline.definitions",
            "-j",
            "full_pipeline",
            "--tags",
            partition,
        ],
    }
    results = {}
    # a warm engine, as on any machine where Spark ran since it booted (the release before has no engine: each of
    # its processes starts its own JVM, which the breakdown shows)
    subprocess.run(
        [args.python, "-m", "ontos_pipeline.cli", "engine", "start"], cwd=args.cwd, env=env, capture_output=True
    )
    try:
        for title, argv in commands.items():
            results[title] = profiled(args.python, Path(args.cwd), env, ["-m", *argv], work / "profile.json", events)
            print(f"{title}: {results[title]['wall_s']:.1f} s", flush=True)
    finally:
        subprocess.run(
            [args.python, "-m", "ontos_pipeline.cli", "engine", "stop"], cwd=args.cwd, env=env, capture_output=True
        )
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.label}: seconds of each process by what its Python stack was doing\n")
    head = ["command", "wall", *CATEGORIES, "Spark jobs (own time)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for title, r in results.items():
        cells = [
            f"{r['wall_s']:.1f}",
            *[f"{r[c]:.1f}" for c in CATEGORIES],
            f"{r['spark_jobs']} ({r['spark_job_s']:.1f} s)",
        ]
        print(f"| {title} | " + " | ".join(cells) + " |")
    out = ROOT / "bench" / "results" / f"profile_steps_{args.label}.json"
    out.write_text(
        json.dumps(
            {"label": args.label, "checkout": args.cwd, "results": results, "machine": {"cpus": os.cpu_count()}},
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
