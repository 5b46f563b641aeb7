"""Benchmark: training per use case, our `trained_model` asset vs a plain scikit-learn script on the same export.

    uv run python bench/train_models.py [--home DIR | --reuse-home DIR] [--use-case NAME ...]

Setup (once, timed but not compared): `ontos demo` in a fresh ONTOS_HOME (each spec's 2,000 items), which leaves
every use case's sheet, training sheet and JSONL export in place. Then per use case, each in its own process with
the peak RSS of the process tree (Python + Spark's JVM) sampled every 50 ms:
- ours: `dagster asset materialize --select trained_model --partition <use case>`: Spark start, the dual-gated rows
  read from Delta, baseline + model families fitted and scored on val, MLflow logging, registration (alias
  challenger), reproducibility pack and a lineage row;
- plain: what a user would write on the exported instruction JSONL: TF-IDF of the prompt + LogisticRegression
  (enum, text: answer strings as classes), + Ridge (number), + one LogisticRegression per field (object).
Finally one process scores each challenger registered by `ours` on the test rows of the export (the same rows the
plain script scores, checked by item_ref) with the spec's gate metric, and reads from Dagster and MLflow where the
step's time went. Columns: `ours s` / `plain s` are process wall times (imports included), `(step s)` the
trained_model step as Dagster recorded it, ours' `(fit s)` the candidates' fit + validation scoring (MLflow
`fit_seconds`), plain's `(fit s)` reading the JSONL, fitting, predicting and scoring inside the script.
Prints two tables and writes bench/results/train_models.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, run_child, stop_engine


def _lines(export_dir: Path, fmt: str, split: str) -> list[dict]:
    with open(export_dir / fmt / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def export_dir(home: Path, use_case: str) -> Path:
    """The newest complete export of the use case (the demo leaves exactly one)."""
    done = [m.parent for m in (home / "files" / "exports" / use_case).glob("*/manifest.json")]
    if not done:
        raise SystemExit(f"no export of {use_case} under {home}; run the demo there first (or drop --reuse-home)")
    return max(done, key=lambda p: p.stat().st_mtime)


# -- the plain script a user would write (run in a child) ---------------------------------------------------------
def run_plain(export: str, kind: str, metric: str) -> dict:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    from ontos_pipeline.train import metrics

    started = time.perf_counter()
    train, test = _lines(Path(export), "instruction", "train"), _lines(Path(export), "instruction", "test")
    tfidf = TfidfVectorizer()
    x_train, x_test = tfidf.fit_transform([r["prompt"] for r in train]), tfidf.transform([r["prompt"] for r in test])
    y_train, y_test = [r["response"] for r in train], [r["response"] for r in test]

    def classify(labels: list[str]) -> list[str]:
        if len(set(labels)) == 1:
            return [labels[0]] * len(test)
        return LogisticRegression(max_iter=1000).fit(x_train, labels).predict(x_test).tolist()

    if kind == "number":
        pred = Ridge().fit(x_train, [float(y) for y in y_train]).predict(x_test)
        scores = metrics.regression_metrics(np.array(y_test, dtype=float), pred)
    elif kind == "object":  # one classifier per field over the field's JSON-encoded value
        answers, truths = [json.loads(y) for y in y_train], [json.loads(y) for y in y_test]
        fields = sorted({name for a in answers for name in a})
        per_field = {f: classify([json.dumps(a.get(f), sort_keys=True) for a in answers]) for f in fields}
        pred = [{f: json.loads(per_field[f][i]) for f in fields} for i in range(len(test))]
        scores = metrics.extraction_metrics(truths, pred, fields)
    elif kind == "enum":
        scores = metrics.classification_metrics(y_test, classify(y_train), sorted({*y_train, *y_test}))
    else:
        scores = metrics.text_metrics(y_test, classify(y_train))
    return {
        "seconds": time.perf_counter() - started,
        "train_rows": len(train),
        "test_rows": len(test),
        "metric": scores[metric],
    }


# -- our model's test metric and step time (one child for all use cases) ------------------------------------------
def score_ours(home: str, use_cases: list[str]) -> dict:
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
    from pyspark.sql import functions as F

    from ontos_pipeline.data.sheet import current_sheet
    from ontos_pipeline.generate.training_sheet import QA
    from ontos_pipeline.platform.model_store import CHALLENGER
    from ontos_pipeline.platform.spark_session import get_spark
    from ontos_pipeline.resources.targets import orchestrator_resources
    from ontos_pipeline.settings import load_settings
    from ontos_pipeline.specs import load_use_cases
    from ontos_pipeline.train.trainer.local import RESPONSE
    from ontos_pipeline.train.trainer.scoring import headline
    from ontos_pipeline.train.training_data import model_rows, split_frame

    settings = load_settings()
    spark, resources, instance = get_spark(), orchestrator_resources(settings), DagsterInstance.get()
    lakehouse, store, specs = (
        resources["lakehouse"].get(),
        resources["mlflow_store"].get(),
        load_use_cases(settings.use_cases_dir),
    )
    out = {}
    for name in use_cases:
        spec = specs[name]
        qa = lakehouse.read(spark, QA).filter(F.col("training_sheet_id") == spec.training_sheet_id)
        test = split_frame(
            model_rows(spark, lakehouse, spec, qa, current_sheet(lakehouse, name).table, "training"), "test", 0
        )
        exported = [r["item_ref"] for r in _lines(export_dir(Path(home), name), "index", "test")]
        if test["item_ref"].tolist() != exported:
            raise SystemExit(f"{name}: the test rows differ from the export's test split")
        version = store.version(name, CHALLENGER)
        model = store.load(store.version_uri(name, version.version))
        metric = spec.training.gate.metric
        record = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("trained_model"), asset_partitions=[name]), limit=1
        ).records[0]
        step = next(s for s in instance.get_run_step_stats(record.run_id) if s.step_key == "trained_model")
        client, meta = store.client(), record.asset_materialization.metadata
        run = client.get_run(version.run_id).info
        candidates = client.search_runs([run.experiment_id], f"tags.mlflow.parentRunId = '{version.run_id}'")
        out[name] = {
            "model_version": version.version,
            "family": meta["family"].value,
            "val_metric": meta[f"val_{metric}"].value,
            "step_s": step.end_time - step.start_time,
            "fit_s": sum(r.data.metrics["fit_seconds"] for r in candidates),
            # step = before MLflow (Spark start, rows read, fit) + MLflow logging/registration + the rest
            "before_mlflow_s": run.start_time / 1000 - step.start_time,
            "mlflow_s": (run.end_time - run.start_time) / 1000,
            "candidates": [r.data.tags["ontos.family"] for r in candidates],
            "metric": headline(
                spec.template.response_kind,
                test[RESPONSE].tolist(),
                model.predict_frame(test),
                spec.template.response_schema,
                metric,
            ),
        }
    return out


# -- the parent ---------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--home",
        help="ONTOS_HOME to run the demo in (default: a fresh temporary directory, kept "
        "so a later run can pass it to --reuse-home)",
    )
    parser.add_argument("--reuse-home", help="an ONTOS_HOME where `ontos demo` already ran (skips the setup)")
    parser.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    parser.add_argument("--plain", metavar="EXPORT_DIR", help=argparse.SUPPRESS)  # child: the plain script
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--metric", help=argparse.SUPPRESS)
    parser.add_argument("--score", action="store_true", help=argparse.SUPPRESS)  # child: score our models
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        Path(args.out).write_text(json.dumps(run_plain(args.plain, args.kind, args.metric)))
        return
    if args.score:
        Path(args.out).write_text(json.dumps(score_ours(os.environ["ONTOS_HOME"], args.use_case)))
        return

    from ontos_pipeline.platform.console import format_table
    from ontos_pipeline.settings import load_settings
    from ontos_pipeline.specs import load_use_cases

    home = Path(args.reuse_home or args.home or tempfile.mkdtemp(prefix="ontos-bench-train-")).resolve()
    os.environ.update(ONTOS_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), MLFLOW_DISABLE_TELEMETRY="true")
    specs = load_use_cases(load_settings().use_cases_dir)
    use_cases = args.use_case or list(specs)
    setup_s = None
    if not args.reuse_home:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ontos_pipeline.cli", "demo", *[a for u in use_cases for a in ("--use-case", u)]],
            cwd=ROOT,
            check=True,
        )
        setup_s = time.perf_counter() - started
    dagster = str(Path(sys.executable).parent / "dagster")
    quiet = json.dumps({"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    rows = []
    with tempfile.TemporaryDirectory(prefix="ontos-bench-train-out-") as tmp:
        for name in use_cases:
            spec = specs[name]
            kind, metric = spec.template.response_kind, spec.training.gate.metric
            load, out = os.getloadavg()[0], Path(tmp) / f"{name}-ours.json"
            out.write_text("{}")  # the dagster CLI writes nothing: run_child adds wall time and peak RSS to {}
            ours = run_child(
                [
                    dagster,
                    "asset",
                    "materialize",
                    "-m",
                    "ontos_pipeline.definitions",
                    "--select",
                    "trained_model",
                    "--partition",
                    name,
                    "--config-json",
                    quiet,
                ],
                out,
                "ours",
                home=home,
            )
            out = Path(tmp) / f"{name}-plain.json"
            plain = run_child(
                [
                    sys.executable,
                    __file__,
                    "--plain",
                    str(export_dir(home, name)),
                    "--kind",
                    kind,
                    "--metric",
                    metric,
                    "--out",
                    str(out),
                ],
                out,
                "plain",
            )
            rows.append(
                {
                    "use_case": name,
                    "kind": kind,
                    "metric": metric,
                    "ours": ours,
                    "plain": plain,
                    "load_avg_1m_before": load,
                }
            )  # the machine may be shared: note how busy it was
        out = Path(tmp) / "scores.json"
        scores = run_child(
            [
                sys.executable,
                __file__,
                "--score",
                *[a for u in use_cases for a in ("--use-case", u)],
                "--out",
                str(out),
            ],
            out,
            "score",
        )
    stop_engine(home)
    for row in rows:
        row["ours"].update(scores[row["use_case"]])
        row["ratios"] = {k: row["ours"][k] / row["plain"][k] for k in ("process_wall_s", "peak_rss_mb")}

    print(
        f"\ntrained_model vs plain scikit-learn, {os.cpu_count()} cores, ONTOS_HOME {home}"
        + (f" (demo setup {setup_s:.0f} s)" if setup_s else "")
        + "\n"
    )
    columns = [
        ("ours", "process_wall_s"),
        ("ours", "step_s"),
        ("ours", "fit_s"),
        ("ours", "peak_rss_mb"),
        ("plain", "process_wall_s"),
        ("plain", "seconds"),
        ("plain", "peak_rss_mb"),
    ]
    table = [
        [
            r["use_case"],
            r["kind"],
            r["plain"]["train_rows"],
            *(f"{r[v][k]:,.1f}" for v, k in columns),
            *(f"{x:.2f}" for x in r["ratios"].values()),
            r["metric"],
            f"{r['ours']['metric']:.4f}",
            f"{r['plain']['metric']:.4f}",
        ]
        for r in rows
    ]
    print(
        format_table(
            [
                "use case",
                "kind",
                "train rows",
                "ours s",
                "(step s)",
                "(fit s)",
                "ours MB",
                "plain s",
                "(fit s)",
                "plain MB",
                "ours/plain time",
                "ours/plain mem",
                "test metric",
                "ours",
                "plain",
            ],
            table,
        )
    )
    print("\nours, the trained_model step: before MLflow (Spark start, rows read, fit) + MLflow + rest")
    print(
        format_table(
            ["use case", "step s", "before MLflow s", "of which fit s", "MLflow s", "rest s", "winner"],
            [
                [
                    r["use_case"],
                    *(
                        f"{v:.1f}"
                        for v in (
                            o["step_s"],
                            o["before_mlflow_s"],
                            o["fit_s"],
                            o["mlflow_s"],
                            o["step_s"] - o["before_mlflow_s"] - o["mlflow_s"],
                        )
                    ),
                    o["family"],
                ]
                for r in rows
                for o in [r["ours"]]
            ],
        )
    )
    path = ROOT / "bench" / "results" / "train_models.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "memory_gib": round(psutil.virtual_memory().total / 2**30),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "setup_s": setup_s,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
