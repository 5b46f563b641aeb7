"""EVALUATE stage: the challenger, its baseline and the current champion on the same held-out rows, and the gate.

Plain functions: `evaluate` scores models (ResponseModel objects) on a test frame and builds the report (metrics
with a bootstrap interval for the headline, worst slices, worst failures, plots); `promotion_gate` applies the
spec's rules; `record_evaluation` stores the result in `model_evaluations`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import ModelStore
from ontos_pipeline.specs import ITEM_KEY, GateSpec, UseCaseSpec
from ontos_pipeline.train import metrics
from ontos_pipeline.train.trainer.local import RESPONSE
from ontos_pipeline.train.trainer.models import Prediction, ResponseModel
from ontos_pipeline.train.trainer.scoring import score

TABLE = tables.MODEL_EVALUATIONS
BOOTSTRAP_RESAMPLES = 500
FAILURES = 10
SLICE_MAX_DISTINCT = 50  # text-like columns with more distinct values are not sliced
MIN_NEW_ROWS = 10  # test rows that arrived since the champion was trained, needed before the gate judges on them


@dataclass(frozen=True)
class GateRule:
    rule: str
    passed: bool
    detail: str
    numbers: dict


@dataclass(frozen=True)
class GateResult:
    passed: bool
    rules: list[GateRule]

    @classmethod
    def from_rules(cls, passed: bool, rules: list[dict]) -> GateResult:
        """A stored gate result (the `gate_details` JSON of model_evaluations)."""
        return cls(passed, [GateRule(**r) for r in rules])

    def summary(self) -> str:
        return "; ".join(f"{'PASS' if r.passed else 'FAIL'} {r.rule}: {r.detail}" for r in self.rules)


@dataclass
class Evaluation:
    use_case: str
    metric: str
    rows: int
    challenger: dict  # all metrics, plus "headline" and "ci"
    baseline: dict
    champion: dict | None
    champion_version: str | None
    gate: GateResult
    slices: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)  # name -> PNG path

    def report(self) -> dict:
        """The whole evaluation as JSON-ready data (stored in MLflow; its metrics part in model_evaluations)."""
        return {
            "metric": self.metric,
            "rows": self.rows,
            "challenger": self.challenger,
            "baseline": self.baseline,
            "champion": self.champion,
            "champion_version": self.champion_version,
            "gate": {"passed": self.gate.passed, "rules": [asdict(r) for r in self.gate.rules]},
            "worst_slices": self.slices,
            "worst_failures": self.failures,
        }


@dataclass(frozen=True)
class Difference:
    """Challenger minus champion on the same rows, with the paired bootstrap interval of that difference."""

    challenger: float
    champion: float
    low: float | None
    high: float | None
    rows: int
    confidence: float = 0.95

    @property
    def value(self) -> float:
        return self.challenger - self.champion

    def worse_beyond_noise(self, higher_is_better: bool) -> bool:
        """The whole interval lies on the losing side of zero."""
        if higher_is_better:
            return self.high is not None and self.high < 0
        return self.low is not None and self.low > 0

    def better_beyond_noise(self, higher_is_better: bool) -> bool:
        """The whole interval lies on the winning side of zero (a clear improvement)."""
        if higher_is_better:
            return self.low is not None and self.low > 0
        return self.high is not None and self.high < 0

    def numbers(self) -> dict:
        return {
            "challenger": self.challenger,
            "champion": self.champion,
            "difference": self.value,
            "difference_ci_low": self.low,
            "difference_ci_high": self.high,
            "rows": self.rows,
        }

    def describe(self, metric: str, where: str) -> str:
        interval = "n/a" if self.low is None else f"[{self.low:+.4f}, {self.high:+.4f}]"
        return (
            f"{metric} {self.challenger:.4f} vs champion {self.champion:.4f} on {where}: "
            f"difference {self.value:+.4f}, {self.confidence:.0%} interval {interval}"
        )


def paired_difference(
    kind: str,
    truths: list,
    challenger: Prediction,
    champion: Prediction,
    schema: dict,
    metric: str,
    seed: int = 0,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Difference:
    """The metric of `challenger` minus that of `champion` on the same rows, and its percentile bootstrap interval
    (each resample draws rows once and scores both models on them: the pairing removes the noise the two share)."""

    def value(p: Prediction, idx: np.ndarray) -> float | None:
        return score(kind, [truths[i] for i in idx], _subset(p, idx), schema).get(metric)

    def difference(idx: np.ndarray) -> float | None:
        a, b = value(challenger, idx), value(champion, idx)
        return None if a is None or b is None else a - b

    every = np.arange(len(truths))
    low, high = metrics.bootstrap_ci(difference, len(truths), resamples, seed, confidence)
    return Difference(
        float(value(challenger, every)), float(value(champion, every)), low, high, len(truths), confidence
    )


def promotion_gate(
    gate: GateSpec,
    challenger: float,
    baseline: float,
    champion: Difference | None,
    on_new: Difference | None = None,
) -> GateResult:
    """Beats the baseline, meets the minimum, and is not worse than the champion beyond noise: neither on the whole
    test split nor — when it holds enough items that arrived since the champion was trained (`on_new`) — on those,
    the newest data (a retrain on drifted data or feedback must not lose where the data moved; test items are never
    trained on: the split is by item). "Beyond noise": the paired bootstrap interval of the difference lies wholly
    below zero (no fixed tolerance, which let small but consistent regressions through)."""
    higher = metrics.HIGHER_IS_BETTER[gate.metric]
    sign = 1 if higher else -1
    m = gate.metric
    rules = [
        GateRule(
            "beats_baseline",
            sign * (challenger - baseline) > 0,
            f"{m} {challenger:.4f} vs baseline {baseline:.4f}",
            {"challenger": challenger, "baseline": baseline},
        ),
        GateRule(
            "meets_minimum",
            sign * (challenger - gate.minimum) >= 0,
            f"{m} {challenger:.4f} {'>=' if higher else '<='} {gate.minimum:g} required",
            {"challenger": challenger, "minimum": gate.minimum},
        ),
    ]
    for rule, diff, where in (
        ("not_worse_than_champion", champion, "the test split"),
        ("not_worse_on_new_items", on_new, "test items new since the champion"),
    ):
        if diff is not None:
            rules.append(
                GateRule(
                    rule, not diff.worse_beyond_noise(higher), diff.describe(m, f"{diff.rows} {where}"), diff.numbers()
                )
            )
    return GateResult(all(r.passed for r in rules), rules)


def _subset(p: Prediction, idx: np.ndarray) -> Prediction:
    return Prediction(
        [p.responses[i] for i in idx], p.confidence[idx], None if p.proba is None else p.proba[idx], p.classes
    )


def _with_ci(kind: str, truths: list, p: Prediction, schema: dict, metric: str, seed: int) -> dict:
    scores = score(kind, truths, p, schema)

    def headline(idx: np.ndarray) -> float | None:
        return score(kind, [truths[i] for i in idx], _subset(p, idx), schema).get(metric)

    low, high = metrics.bootstrap_ci(headline, len(truths), BOOTSTRAP_RESAMPLES, seed)
    return {**scores, "headline": scores[metric], "ci": [low, high]}


def slice_columns(spec: UseCaseSpec, frame: pd.DataFrame) -> list[str]:
    """Metadata, categorical and numeric columns worth slicing by (not ids, free text or images)."""
    out = []
    for c in spec.sheet.columns:
        if c.name == ITEM_KEY or c.category in ("text", "image") or "phi" in c.tags or c.name not in frame:
            continue
        if c.type in ("integer", "double") or frame[c.name].nunique(dropna=True) <= SLICE_MAX_DISTINCT:
            out.append(c.name)
    return out


def evaluate(
    spec: UseCaseSpec,
    test: pd.DataFrame,
    challenger: ResponseModel,
    baseline: ResponseModel,
    champion: ResponseModel | None,
    champion_version: str | None,
    plots_dir: Path,
    seed: int = 0,
    new_items: frozenset[str] | set[str] = frozenset(),
) -> Evaluation:
    """Score every model on the same `test` rows (item columns plus RESPONSE) and apply the promotion gate;
    `new_items` arrived since the champion was trained (judged on their own when there are enough)."""
    if test.empty:
        raise ValueError(
            f"{spec.name}: the test split has no rows usable for evaluation; label and approve items "
            "of the test split first"
        )
    kind, metric, schema = spec.template.response_kind, spec.training.gate.metric, challenger.template.response_schema
    truths = test[RESPONSE].tolist()
    p = challenger.predict_frame(test)
    result = _with_ci(kind, truths, p, schema, metric, seed)
    base = _with_ci(kind, truths, baseline.predict_frame(test), schema, metric, seed)
    champ, versus, on_new = None, None, None
    confidence = spec.training.gate.confidence
    if champion is not None:
        champion_p = champion.predict_frame(test)
        champ = _with_ci(kind, truths, champion_p, schema, metric, seed)
        versus = paired_difference(kind, truths, p, champion_p, schema, metric, seed, confidence)
        idx = np.flatnonzero(test[ITEM_KEY].isin(new_items).to_numpy())
        if len(idx) >= MIN_NEW_ROWS:
            on_new = paired_difference(
                kind,
                [truths[i] for i in idx],
                _subset(p, idx),
                _subset(champion_p, idx),
                schema,
                metric,
                seed,
                confidence,
            )
    gate = promotion_gate(spec.training.gate, result["headline"], base["headline"], versus, on_new)

    row_score = metrics.row_scores(kind, truths, p.responses)
    frame = test.assign(_score=row_score)
    slices = metrics.worst_slices(frame, "_score", slice_columns(spec, test))
    worst = np.argsort(row_score, kind="stable")[:FAILURES]
    failures = [
        {
            "item_ref": test[ITEM_KEY].iloc[i],
            "expected": truths[i],
            "predicted": p.responses[i],
            "confidence": round(float(p.confidence[i]), 4),
            "score": round(float(row_score[i]), 4),
        }
        for i in worst
        if row_score[i] < (1.0 if kind != "number" else np.inf)
    ]
    return Evaluation(
        spec.name,
        metric,
        len(test),
        result,
        base,
        champ,
        champion_version,
        gate,
        slices,
        failures,
        _plots(kind, truths, p, row_score, result, plots_dir),
    )


def _plots(
    kind: str, truths: list, p: Prediction, row_score: np.ndarray, result: dict, directory: Path
) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    if kind == "enum":
        out["confusion_matrix"] = metrics.confusion_matrix_png(
            result["confusion_matrix"], p.classes, directory / "confusion_matrix.png"
        )
    if kind == "number":
        out["residuals"] = metrics.residuals_png(truths, p.responses, directory / "residuals.png")
    else:
        correct = row_score >= (0.5 if kind == "text" else 1.0)
        out["calibration"] = metrics.calibration_png(p.confidence, correct, directory / "calibration.png")
    if kind == "object":
        out["field_accuracy"] = metrics.field_accuracy_png(result["per_field"], directory / "field_accuracy.png")
    return {k: str(v) for k, v in out.items()}


def record_evaluation(
    lakehouse: Lakehouse,
    evaluation: Evaluation,
    model_name: str,
    model_version: str,
    mlflow_run_id: str,
    dagster_run_id: str | None,
) -> str:
    """Upsert the evaluation of this model version (one row per version; re-evaluation replaces it)."""
    evaluation_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{model_name}/{model_version}"))
    report = evaluation.report()
    champion = evaluation.champion_version
    row = {
        "evaluation_id": evaluation_id,
        "use_case": evaluation.use_case,
        "model_name": model_name,
        "model_version": str(model_version),
        "champion_version": None if champion is None else str(champion),
        "metrics": json.dumps(
            {k: v for k, v in report.items() if k in ("metric", "rows", "challenger", "baseline", "champion")},
            default=str,
        ),
        "gate_passed": evaluation.gate.passed,
        "gate_details": json.dumps(report["gate"]["rules"]),
        "mlflow_run_id": mlflow_run_id,
        "dagster_run_id": dagster_run_id,
        "created_at": datetime.now(UTC),
    }
    lakehouse.upsert_records(TABLE, [row], keys=["evaluation_id"])
    return evaluation_id


def stored_evaluation(lakehouse: Lakehouse, use_case: str, model_version: str | None = None) -> dict | None:
    """The stored evaluation of a model version (default: the latest of the use case), or None."""
    where = {"use_case": use_case, **({"model_version": str(model_version)} if model_version is not None else {})}
    return max(lakehouse.records(TABLE, where), key=lambda r: r["created_at"], default=None)


def log_evaluation(store: ModelStore, run_id: str, evaluation: Evaluation, plots_dir: Path) -> dict[str, str]:
    """Attach test metrics, the report and the plots to the model's MLflow run; return where the plots are stored."""
    m = evaluation.metric
    low, high = evaluation.challenger["ci"]
    values = {
        f"test_{m}": evaluation.challenger["headline"],
        f"test_{m}_ci_low": low,
        f"test_{m}_ci_high": high,
        f"baseline_test_{m}": evaluation.baseline["headline"],
        f"champion_test_{m}": evaluation.champion["headline"] if evaluation.champion else None,
    }
    client = store.client()
    for key, value in values.items():
        if value is not None:
            client.log_metric(run_id, key, float(value))
    client.set_tag(run_id, "ontos.gate", "passed" if evaluation.gate.passed else "failed")
    client.log_dict(run_id, evaluation.report(), "evaluation/report.json")
    client.log_artifacts(run_id, str(plots_dir), "evaluation")
    root = client.get_run(run_id).info.artifact_uri
    local = Path(root.removeprefix("file://")) / "evaluation" if root.startswith("file://") else None
    return {
        name: str(local / Path(path).name) if local else f"{root}/evaluation/{Path(path).name}"
        for name, path in evaluation.plots.items()
    }
