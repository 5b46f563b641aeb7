"""Benchmark: model quality on bring-your-own data, our LocalTrainer vs a plain scikit-learn script vs our baseline.

    uv run python bench/byod_quality.py

Data sets, each a use case under bench/byod_specs/ in the form `ontos use-case init` writes (typed source columns,
numeric / categorical sheet columns, the target as `labels.column`, a `<col>: {{ <col> }}` prompt):
- penguins_species: examples/penguins.csv (Palmer penguins, CC0, 344 rows; "NA" is missing), species (enum);
- penguins_body_mass: the same file, body_mass_g (number);
- diabetes: scikit-learn's bundled diabetes data set (442 rows, ten standardised measurements), target (number).

Items get item_ref `<name>-<row number, 6 digits>` and the pipeline's own split: the training sheet's
`split_column` (a stable hash of item_ref, evaluated by Spark on a local engine in a temporary ONTOS_HOME). On that
split, per data set:
- ours: `LocalTrainer(seed).train` on the train and val rows (families fitted on train; regularization, the prompt
  TF-IDF block and the winner chosen on val), the winner scored on the test rows;
- plain: the script a user would write: ColumnTransformer (SimpleImputer + StandardScaler on numeric columns,
  SimpleImputer + OneHotEncoder on categorical ones) + LogisticRegression (enum) or RidgeCV (number), fitted on
  the train rows;
- baseline: our baseline candidate (majority class, mean).
The headline test metric is accuracy (enum) or r2 (number), with the ratio ours/plain (the issue's bar: >= 0.95).
For number responses the table also checks the per-row confidence on the test rows: its mean next to the share of
rows whose error is within the tolerance, and the mean |error| of the more confident half vs the less confident one.
Prints a table and writes bench/results/byod_quality.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, stop_engine

SPECS = ROOT / "bench" / "byod_specs"
HEADLINE = {"enum": "accuracy", "number": "r2"}


def raw_frames() -> dict[str, tuple[pd.DataFrame, str]]:
    """Use case name -> (the data set's columns, the target column)."""
    from sklearn.datasets import load_diabetes

    penguins = pd.read_csv(ROOT / "examples" / "penguins.csv", na_values=["NA"], keep_default_na=False)
    diabetes = load_diabetes(as_frame=True).frame
    return {
        "penguins_species": (penguins, "species"),
        "penguins_body_mass": (penguins, "body_mass_g"),
        "diabetes": (diabetes, "target"),
    }


def item_frame(name: str, data: pd.DataFrame, target: str) -> pd.DataFrame:
    """The sheet's items: item_ref, every column but the target, and the target as the parsed response."""
    from ontos_pipeline.train.trainer.local import RESPONSE

    frame = data.drop(columns=[target]).reset_index(drop=True)
    frame.insert(0, "item_ref", [f"{name}-{i:06d}" for i in range(1, len(frame) + 1)])
    values = data[target].tolist()
    frame[RESPONSE] = [v if isinstance(v, str) else float(v) for v in values]
    return frame[data[target].notna().to_numpy()].reset_index(drop=True)


def pipeline_splits(specs: dict, frames: dict[str, pd.DataFrame]) -> dict[str, pd.Series]:
    """Use case -> split per item (aligned with its frame), from the training sheet's own `split_column`."""
    from ontos_pipeline.generate.training_sheet import split_column
    from ontos_pipeline.platform.spark_session import get_spark
    from ontos_pipeline.specs import ITEM_KEY

    spark = get_spark()
    out = {}
    for name, frame in frames.items():
        refs = spark.createDataFrame(frame[[ITEM_KEY]])
        split = refs.withColumn("split", split_column(specs[name])).toPandas().set_index(ITEM_KEY)["split"]
        out[name] = frame[ITEM_KEY].map(split)
    return out


def run_plain(spec, train: pd.DataFrame, test: pd.DataFrame) -> tuple[list, float]:
    """The plain scikit-learn script on the sheet's numeric and categorical columns; (test predictions, seconds)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from ontos_pipeline.train.trainer.local import RESPONSE

    started = time.perf_counter()
    numeric = [c.name for c in spec.sheet.columns_of("numeric")]
    categorical = [c.name for c in spec.sheet.columns_of("categorical")]
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                categorical,
            ),
        ]
    )
    kind = spec.template.response_kind
    learner = LogisticRegression(max_iter=1000) if kind == "enum" else RidgeCV()
    model = make_pipeline(columns, learner)
    y = train[RESPONSE].tolist() if kind == "enum" else train[RESPONSE].astype(float).to_numpy()
    model.fit(train[numeric + categorical].astype({c: object for c in categorical}), y)
    pred = model.predict(test[numeric + categorical].astype({c: object for c in categorical}))
    return [str(p) if kind == "enum" else float(p) for p in pred], time.perf_counter() - started


def confidence_check(prediction, truths: list, tolerance: float) -> dict:
    """Per-row confidence of a number model on test rows: calibration and ranking."""
    conf, error = np.asarray(prediction.confidence), np.abs(np.asarray(prediction.responses) - np.asarray(truths))
    order = np.argsort(-conf, kind="stable")
    half = len(order) // 2
    return {
        "mean_confidence": float(conf.mean()),
        "share_within_tolerance": float(np.mean(error <= tolerance)),
        "distinct_confidences": len(np.unique(conf.round(6))),
        "mae_confident_half": float(error[order[:half]].mean()),
        "mae_other_half": float(error[order[half:]].mean()),
    }


def measure(name: str, spec, frame: pd.DataFrame, split: pd.Series) -> dict:
    from ontos_pipeline.generate.template import compile_template
    from ontos_pipeline.train import metrics
    from ontos_pipeline.train.trainer.local import RESPONSE, LocalTrainer, TrainingData
    from ontos_pipeline.train.trainer.scoring import score

    kind, template = spec.template.response_kind, compile_template(spec)
    metric = HEADLINE[kind]
    train, val, test = (frame[split.to_numpy() == s].reset_index(drop=True) for s in ("train", "val", "test"))
    truths = test[RESPONSE].tolist()
    started = time.perf_counter()
    outcome = LocalTrainer(seed=spec.training.seed).train(spec, template, TrainingData(train, val))
    ours_s = time.perf_counter() - started
    items = test.drop(columns=[RESPONSE])
    ours = outcome.best.model.predict_frame(items)
    baseline = outcome.baseline.model.predict_frame(items)
    plain_pred, plain_s = run_plain(spec, train, test)
    if kind == "enum":
        plain = metrics.classification_metrics(
            truths, plain_pred, [str(c) for c in spec.template.response_schema["enum"]]
        )
    else:
        plain = metrics.regression_metrics(np.asarray(truths, dtype=float), np.asarray(plain_pred))
    row = {
        "use_case": name,
        "kind": kind,
        "metric": metric,
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "ours": score(kind, truths, ours, template.response_schema)[metric],
        "plain": plain[metric],
        "baseline": score(kind, truths, baseline, template.response_schema)[metric],
        "ours_family": outcome.best.family,
        "ours_params": outcome.best.params,
        "ours_val": outcome.best.headline,
        "candidates": {c.family: {"val": c.headline, "params": c.params} for c in outcome.candidates},
        "ours_s": ours_s,
        "plain_s": plain_s,
    }
    row["ratio"] = row["ours"] / row["plain"]
    if kind == "number":
        row["confidence"] = confidence_check(ours, truths, outcome.best.model.predictor.tolerance)
    return row


def main() -> None:
    from ontos_pipeline.platform.console import format_table
    from ontos_pipeline.specs import load_use_case

    home = Path(tempfile.mkdtemp(prefix="ontos-bench-byod-"))
    os.environ.update(ONTOS_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
    specs = {p.stem: load_use_case(p) for p in sorted(SPECS.glob("*.yaml"))}
    frames = {name: item_frame(name, data, target) for name, (data, target) in raw_frames().items()}
    try:
        splits = pipeline_splits(specs, frames)
    finally:
        from ontos_pipeline.platform.spark_session import disconnect

        disconnect()
        stop_engine(home)
    rows = [measure(name, specs[name], frames[name], splits[name]) for name in frames]

    print(f"\nLocalTrainer vs plain scikit-learn vs baseline on the test split, {os.cpu_count()} cores\n")
    print(
        format_table(
            ["use case", "kind", "train/val/test", "metric", "ours", "plain", "baseline", "ours/plain", "winner"],
            [
                [
                    r["use_case"],
                    r["kind"],
                    "/".join(str(v) for v in r["rows"].values()),
                    r["metric"],
                    f"{r['ours']:.4f}",
                    f"{r['plain']:.4f}",
                    f"{r['baseline']:.4f}",
                    f"{r['ratio']:.3f}",
                    r["ours_family"] + (" +prompt" if r["ours_params"].get("prompt_tfidf") else ""),
                ]
                for r in rows
            ],
        )
    )
    print("\nper-row confidence of the number models on the test rows")
    print(
        format_table(
            ["use case", "mean confidence", "share within tol.", "distinct", "MAE confident half", "MAE other half"],
            [
                [
                    r["use_case"],
                    f"{c['mean_confidence']:.3f}",
                    f"{c['share_within_tolerance']:.3f}",
                    c["distinct_confidences"],
                    f"{c['mae_confident_half']:.2f}",
                    f"{c['mae_other_half']:.2f}",
                ]
                for r in rows
                if (c := r.get("confidence"))
            ],
        )
    )
    path = ROOT / "bench" / "results" / "byod_quality.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": rows,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
