"""Benchmark: what a user waits for on the embedded default, each command a whole process, side by side with the
plain alternative in the same run.

    uv run python bench/overhead.py [--home DIR] [--repeat 5] [--use-case NAME] [--feedback-loop]

Without --home it first runs `ontos demo` (README command 1 without the install) in a fresh ONTOS_HOME, with a
cold engine, and times it; with --home it measures on that demo state (not changed: commands that write run on a
copy). Then, each figure the median of --repeat runs on a warm engine (started once, as on any machine where Spark
ran since boot):

- `ontos tasks list`, `ontos review list <uc>`, `ontos alerts list`, against a python process reading the same
  Delta table with deltalake and printing it;
- `dagster asset materialize --select template --partition <uc>`;
- the `full_pipeline` job of one use case (`dagster job execute`), against bench/plain_pipeline.py: pandas +
  Jinja2 + scikit-learn doing the same steps.

With --feedback-loop it also runs bench/feedback_loop.py (feedback committed -> new champion answering, vs a direct
in-process retrain) and reports its figures. Prints a table and writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, stop_engine

PY = sys.executable
BIN = Path(PY).parent

PLAIN_READ = """
import sys
from deltalake import DeltaTable
table = DeltaTable(sys.argv[1]).to_pyarrow_table()
if len(sys.argv) > 2:  # a training sheet: its rows, first items
    import pyarrow.compute as pc
    table = table.filter(pc.equal(table["training_sheet_id"], sys.argv[2])).sort_by("item_ref").slice(0, 20)
print(table.to_pandas().to_string())
"""


def timed(argv: list[str], env: dict, cwd: Path = ROOT, ok=(0,)) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[:6])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, done.returncode


def summary(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "runs": len(seconds)}


def median(argv: list[str], env: dict, repeat: int, ok=(0,)) -> dict:
    runs = [timed(argv, env, ok=ok) for _ in range(repeat)]
    return {**summary([s for s, _ in runs]), "aborted_at_exit": sum(code == -6 for _, code in runs)}


def run_demo(home: Path, env: dict) -> float:
    print(f"ontos demo in {home} (cold engine) ...", flush=True)
    try:
        wall, _ = timed([str(BIN / "ontos"), "demo"], {**env, "ONTOS_HOME": str(home)})
    finally:  # the demo's engine; the measures below run on an engine of their own
        stop_engine(home, env)
    print(f"  {wall:.0f} s", flush=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="an ONTOS_HOME with the demo's state (default: run the demo first)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--use-case", default="predictive_maintenance")
    parser.add_argument("--feedback-loop", action="store_true", help="also run bench/feedback_loop.py")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONTOS_", "DAGSTER_", "MLFLOW_"))}
    base.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DAGSTER_DISABLE_TELEMETRY="true",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    work = Path(tempfile.mkdtemp(prefix="ontos-bench-overhead-"))
    results: dict = {"use_case": args.use_case, "repeat": args.repeat}
    if args.home:
        home = Path(args.home).resolve()
    else:
        home = work / "demo"
        results["demo_s"] = run_demo(home, base)
    uc, tables = args.use_case, home / "tables" / "ontos" / "workbench"
    env = {
        **base,
        "ONTOS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ONTOS_ENGINE_HOME": str(work / "engine"),
    }
    timed([PY, "-m", "ontos_pipeline.cli", "engine", "start"], env)
    try:
        from ontos_pipeline.specs import load_use_cases

        spec = load_use_cases(ROOT / "synthetic_data" / "use_cases")[uc]
        sheet_id = spec.training_sheet_id
        commands = {
            "ontos tasks list": (
                [PY, "-m", "ontos_pipeline.cli", "tasks", "list"],
                [PY, "-c", PLAIN_READ, str(tables / "annotation_tasks")],
            ),
            f"ontos review list {uc}": (
                [PY, "-m", "ontos_pipeline.cli", "review", "list", uc],
                [PY, "-c", PLAIN_READ, str(tables / "qa_pairs"), sheet_id],
            ),
            "ontos alerts list": (
                [PY, "-m", "ontos_pipeline.cli", "alerts", "list"],
                [PY, "-c", PLAIN_READ, str(tables / "alerts")],
            ),
        }
        rows = {}
        for title, (ours, plain) in commands.items():
            rows[title] = {"ours": median(ours, env, args.repeat), "plain": median(plain, env, args.repeat, ok=(0, -6))}
            print(
                f"{title}: {rows[title]['ours']['median_s']:.2f} s vs plain {rows[title]['plain']['median_s']:.2f} s",
                flush=True,
            )
        # commands that write run on a copy of the state, a fresh copy per run
        copy = work / "copy"

        def on_copy(argv: list[str]) -> dict:
            seconds = []
            for _ in range(args.repeat):
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(home, copy, ignore=shutil.ignore_patterns("engine"))
                run_env = {**env, "ONTOS_HOME": str(copy), "DAGSTER_HOME": str(copy / "dagster")}
                seconds.append(timed(argv, run_env)[0])
            return summary(seconds)

        title = f"dagster asset materialize --select template ({uc})"
        rows[title] = {
            "ours": on_copy(
                [
                    str(BIN / "dagster"),
                    "asset",
                    "materialize",
                    "-m",
                    "ontos_pipeline.definitions",
                    "--select",
                    "template",
                    "--partition",
                    uc,
                ]
            )
        }
        print(f"{title}: {rows[title]['ours']['median_s']:.1f} s", flush=True)
        title = f"full_pipeline ({uc}, {spec.synthetic.rows if spec.synthetic else '?'} items)"
        rows[title] = {
            "ours": on_copy(
                [
                    str(BIN / "dagster"),
                    "job",
                    "execute",
                    "-m",
                    "ontos_pipeline.definitions",
                    "-j",
                    "full_pipeline",
                    "--tags",
                    json.dumps({"dagster/partition": uc}),
                ]
            ),
            "plain": median(
                [PY, str(ROOT / "bench" / "plain_pipeline.py"), str(spec.path), str(home), str(work / "plain")],
                env,
                args.repeat,
            ),
        }
        print(
            f"{title}: {rows[title]['ours']['median_s']:.1f} s vs plain {rows[title]['plain']['median_s']:.1f} s",
            flush=True,
        )
        results["commands"] = rows
    finally:
        stop_engine(home, env)
    if args.feedback_loop:
        subprocess.run([PY, str(ROOT / "bench" / "feedback_loop.py"), "--use-case", uc], env=base, check=True)
        results["feedback_loop"] = json.loads((ROOT / "bench" / "results" / "feedback_loop.json").read_text())
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n{platform.node() or 'this machine'}: {os.cpu_count()} cores; median of {args.repeat} runs each\n")
    print("| measure | ours (s) | plain (s) | ours / plain |\n|---|---|---|---|")
    if "demo_s" in results:
        print(f"| `ontos demo` (cold engine, one run) | {results['demo_s']:.0f} | | |")
    for title, r in results["commands"].items():
        ours, plain = r["ours"]["median_s"], r.get("plain", {}).get("median_s")
        cells = [f"{ours:.2f}", f"{plain:.2f}" if plain else "", f"{ours / plain:.1f}" if plain else ""]
        print(f"| {title} | " + " | ".join(cells) + " |")
    if "feedback_loop" in results:
        loop = results["feedback_loop"]["results"]
        ours, plain = (loop[k]["total_s"] for k in loop)
        print(f"| feedback -> new champion answering | {ours:.1f} | {plain:.1f} | {ours / plain:.1f} |")
    aborted = {
        t: r["plain"]["aborted_at_exit"]
        for t, r in results["commands"].items()
        if r.get("plain", {}).get("aborted_at_exit")
    }
    if aborted:
        print(f"\nplain processes that aborted at exit (SIGABRT after printing, deltalake's reader threads): {aborted}")
    out = ROOT / "bench" / "results" / "overhead.json"
    out.write_text(
        json.dumps({**results, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
