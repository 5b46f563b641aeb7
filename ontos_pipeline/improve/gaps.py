"""IMPROVE stage, part 1: gaps of a use case's model, found in real evaluation, monitoring and feedback data.

Kinds (each gap carries evidence numbers, a suggested action, a severity and, where it has one, the region of items
it concerns, so annotation tasks can pick items there):
- worst_slice: evaluation slices (column = value) clearly below the overall row score;
- low_support: response classes / enum field values / number ranges with few current training labels;
- low_confidence: regions of unlabelled or disputed sheet items where the model's confidence is low (the items are
  scored with the model in bounded batches: at most `max_scored` candidates per use case, chosen in Spark);
- drift: inputs (and predictions) whose drift flag is set in the latest monitoring report that assessed drift;
- negative_feedback: items with repeated thumbs-down / corrections, and answers that draw mostly negative feedback.

Gap ids are deterministic in (use case, kind, subject): a re-run finds the same gaps, and `record_gaps` replaces the
use case's rows of `gap_reports` in one commit, so nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.label.feedback import FEEDBACK
from ontos_pipeline.label.labels import current_labels
from ontos_pipeline.monitor.monitoring import (
    IMAGE_STATS,
    PREDICTION,
    REPORTS,
    UNREADABLE,
    MonitoringReport,
    features,
    image_statistics,
    report_order,
    scalar_text,
    served_records,
    window_requests,
)
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.console import markdown_table
from ontos_pipeline.platform.images import image_file_column, with_image_files
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import CHAMPION, ModelStore
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec
from ontos_pipeline.train import metrics
from ontos_pipeline.train.evaluation import SLICE_MAX_DISTINCT, slice_columns, stored_evaluation
from ontos_pipeline.train.trainer.models import ResponseModel

GAPS = tables.GAP_REPORTS
KINDS = ("worst_slice", "low_support", "low_confidence", "drift", "negative_feedback")
PRIORITY = {"high": 1, "medium": 2, "low": 3}  # annotation task priority (1 = most urgent) by gap severity
CONFIDENCE = "confidence"
DISPUTED = "disputed"
WORST_SLICE_DELTA = 0.1  # row score below the overall mean by at least this (enum, object, text)
WORST_SLICE_RATIO = 1.5  # number: mean absolute error at least this multiple of the overall
LOW_SUPPORT_MIN = 10  # fewer training labels than this is low support ...
LOW_SUPPORT_RATIO = 0.25  # ... and so is less than this share of an even split
NUMBER_BINS = 10
LOW_CONFIDENCE = 0.6  # an answer below this confidence is uncertain
LOW_CONFIDENCE_SHARE = 0.25  # overall gap when at least this share of the candidates is uncertain
LOW_CONFIDENCE_DELTA = 0.1  # regional gap when a slice's mean confidence is this much below the candidates' mean
MIN_REGION = 10  # rows a slice needs to count
NEGATIVE_MIN = 2  # negative feedback events that make an item's feedback "repeated"
PATTERN_MIN = 5  # negative events an answer needs before it is a pattern ...
PATTERN_RATE = 0.5  # ... with at least this share of its judged answers negative
MAX_SCORED = 2000  # candidates scored per use case (stable hash sample)
SCORE_BATCH = 500
MAX_ITEMS_IN_EVIDENCE = 20
_BIN = re.compile(r"^\[(?P<lo>[^,]+), (?P<hi>[^\]\)]+)(?P<end>[\]\)])$")


@dataclass(frozen=True)
class Gap:
    use_case: str
    kind: str
    subject: str
    description: str
    evidence: dict
    suggested_action: str
    severity: str  # high | medium | low
    region: dict | None = None  # where the items to label are: see `in_region`

    @property
    def gap_id(self) -> str:
        return gap_id(self.use_case, self.kind, self.subject)

    def record(self, report_id: str, created_at: datetime) -> dict:
        evidence = {**self.evidence, "subject": self.subject, "region": self.region}
        return {
            "gap_id": self.gap_id,
            "report_id": report_id,
            "use_case": self.use_case,
            "kind": self.kind,
            "description": self.description,
            "evidence": json.dumps(evidence, default=str, sort_keys=True),
            "suggested_action": self.suggested_action,
            "severity": self.severity,
            "created_at": created_at,
        }


def gap_id(use_case: str, kind: str, subject: str) -> str:
    return "G" + hashlib.sha1(f"{use_case}\x1f{kind}\x1f{subject}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class EvaluationInputs:
    """The stored evaluation of one model version, with the worst slices of its MLflow report."""

    model_version: str
    role: str  # champion | latest evaluated
    evaluation_id: str
    metric: str
    rows: int
    metrics: dict  # the evaluated model's metrics (per_class, per_field, headline, ...)
    worst_slices: list[dict] = field(default_factory=list)


@dataclass
class GapInputs:
    """What `find_gaps` looked at; `notes` says which kinds could not be assessed and why."""

    evaluation: EvaluationInputs | None = None
    monitoring: MonitoringReport | None = None
    model_version: str | None = None
    scored: pd.DataFrame | None = None  # candidates with prediction and confidence
    notes: dict[str, str] = field(default_factory=dict)


# -- inputs -------------------------------------------------------------------------------------------------------
def latest_evaluation(
    spark: SparkSession, lakehouse: Lakehouse, store: ModelStore, use_case: str
) -> EvaluationInputs | None:
    """The evaluation of the champion, else the latest evaluation of the use case; None if there is none."""
    import mlflow

    champion = store.version(use_case, CHAMPION)
    row, role = (stored_evaluation(lakehouse, use_case, champion.version), "champion") if champion else (None, "")
    if row is None:
        row, role = stored_evaluation(lakehouse, use_case), "latest evaluated"
    if row is None:
        return None
    stored = json.loads(row["metrics"])
    slices: list[dict] = []
    if row["mlflow_run_id"]:
        store.activate()
        try:
            slices = mlflow.artifacts.load_dict(f"runs:/{row['mlflow_run_id']}/evaluation/report.json").get(
                "worst_slices", []
            )
        except (MlflowException, OSError, ValueError):
            slices = []  # the report artifact is gone: the other kinds still work
    return EvaluationInputs(
        str(row["model_version"]),
        role,
        row["evaluation_id"],
        stored["metric"],
        int(stored["rows"]),
        stored["challenger"],
        slices,
    )


def scoring_model(
    store: ModelStore, use_case: str, evaluation: EvaluationInputs | None
) -> tuple[str, ResponseModel] | tuple[None, None]:
    """(version, model) of the champion, else of the evaluated version; (None, None) without either."""
    champion = store.version(use_case, CHAMPION)
    version = str(champion.version) if champion else evaluation.model_version if evaluation else None
    if version is None:
        return None, None
    return version, store.load(store.version_uri(use_case, version))


def latest_drift_report(lakehouse: Lakehouse, use_case: str) -> MonitoringReport | None:
    """The monitoring report of the most recent window that assessed drift (else the most recent report, or None);
    by window, not by when it was computed: reports of earlier windows can be computed later (backfills,
    concurrent runs)."""
    rows = sorted(lakehouse.records(REPORTS, {"use_case": use_case}), key=report_order, reverse=True)
    assessed = [r for r in rows if json.loads(r["drift"] or "[]")]
    chosen = (assessed or rows or [None])[0]
    return None if chosen is None else MonitoringReport.from_record(chosen)


def training_labels(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame:
    """Current canonical labels that may be used for training and are not in open conflict."""
    labels = current_labels(spark, lakehouse, spec.name, spec.labels.label_type)
    prohibited = F.coalesce(F.array_contains("prohibited_uses", "training"), F.lit(False))
    allowed = F.col("allowed_uses").isNull() | F.coalesce(F.array_contains("allowed_uses", "training"), F.lit(False))
    return labels.filter(~F.col("conflict") & ~prohibited & allowed)


def negative_feedback(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame:
    """Accepted feedback with its item_ref (from the request's record when only the request id was given), the
    served prediction (JSON-scalar text, when the request is in the inference log) and a `negative` flag."""
    fb = lakehouse.read(spark, FEEDBACK).filter((F.col("use_case") == spec.name) & (F.col("status") != "rejected"))
    log = lakehouse.read(spark, INFERENCE_LOG).filter(F.col("endpoint_name") == spec.serving.endpoint_name)
    served = served_records(log).select(
        "request_id", "batch", F.col("inputs")[ITEM_KEY].alias("record_ref"), PREDICTION
    )
    joined = fb.join(served, "request_id", "left").filter(
        F.col("batch").isNull() | (F.col("batch") == 1) | (F.col("item_ref") == F.col("record_ref"))
    )
    return joined.select(
        "seq",
        F.coalesce("item_ref", "record_ref").alias(ITEM_KEY),
        "rating",
        "correction",
        PREDICTION,
        ((F.col("rating") == "down") | F.col("correction").isNotNull()).alias("negative"),
    )


def candidates(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, sheet_table: str, limit: int = MAX_SCORED
) -> DataFrame:
    """Sheet items worth labelling: without a usable current label, or disputed (open label conflict or negative
    feedback); disputed ones first, then a stable hash order, at most `limit` rows (column `disputed`)."""
    labels = current_labels(spark, lakehouse, spec.name, spec.labels.label_type)
    settled = labels.filter(~F.col("conflict")).select(ITEM_KEY)
    conflicted = labels.filter(F.col("conflict")).select(ITEM_KEY)
    negative = negative_feedback(spark, lakehouse, spec).filter("negative").select(ITEM_KEY)
    disputed = conflicted.unionByName(negative).distinct().withColumn(DISPUTED, F.lit(True))
    sheet = lakehouse.read(spark, sheet_table)
    rows = sheet.join(disputed, ITEM_KEY, "left").withColumn(DISPUTED, F.coalesce(DISPUTED, F.lit(False)))
    rows = rows.join(settled, ITEM_KEY, "left_anti").unionByName(
        rows.filter(DISPUTED).join(settled, ITEM_KEY, "left_semi")
    )
    return rows.orderBy(F.col(DISPUTED).desc(), F.xxhash64(ITEM_KEY), ITEM_KEY).limit(limit)


def score(model: ResponseModel, frame: pd.DataFrame, batch: int = SCORE_BATCH) -> pd.DataFrame:
    """`frame` plus the model's `prediction` and `confidence`, answered in batches of `batch` rows."""
    frame = frame.reset_index(drop=True)
    answers: list[dict] = []
    for start in range(0, len(frame), batch):
        answers += model.answer(model.inputs_of(frame.iloc[start : start + batch]))[0]
    return frame.assign(
        **{
            PREDICTION: [a["response"] for a in answers],
            CONFIDENCE: np.array([a["confidence"] for a in answers], dtype=float),
        }
    )


def scored_candidates(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    sheet_table: str,
    model: ResponseModel | None,
    limit: int = MAX_SCORED,
) -> pd.DataFrame:
    """The bounded candidate sample as pandas (with the image files resolved here), scored by `model` (confidence
    NaN without a model)."""
    images = [c.name for c in spec.sheet.columns_of("image")]
    frame = candidates(spark, lakehouse, spec, sheet_table, limit).toPandas()
    frame = with_image_files(frame, images, lakehouse.volume_path())
    if model is None or frame.empty:
        return frame.assign(**{PREDICTION: None, CONFIDENCE: np.nan})
    return score(model, frame)


# -- regions ------------------------------------------------------------------------------------------------------
def feature_values(frame: pd.DataFrame, feature: str, kind: str) -> pd.Series:
    """A monitored feature (see monitoring.features) computed on item rows with a `prediction` column."""
    name, _, derived = feature.partition(":")
    column = frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index)
    if derived == "length":
        return column.map(
            lambda v: (
                np.nan
                if v is None or (isinstance(v, float) and np.isnan(v))
                else float(len(v if isinstance(v, str) else json.dumps(v)))
            )
        )
    if derived in (*IMAGE_STATS, UNREADABLE):  # an image column's statistic, as monitoring computed it
        files = frame.get(image_file_column(name), column)
        column = image_statistics(files.where(files.notna(), None))[derived]  # files resolved: no root
    if kind == "numeric":
        return pd.to_numeric(column, errors="coerce")
    return column.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).lower())


def _slice_mask(frame: pd.DataFrame, column: str, value: str) -> pd.Series:
    if column not in frame:
        return pd.Series(False, index=frame.index)
    series = frame[column]
    if value == "null":
        return series.isna()
    match = _BIN.match(value)
    if match and pd.api.types.is_numeric_dtype(series):
        try:
            lo, hi = float(match["lo"]), float(match["hi"])
        except ValueError:
            return series.astype(str) == value
        upper = series <= hi if match["end"] == "]" else series < hi
        return (series >= lo) & upper
    return series.map(lambda v: not pd.isna(v) and str(v) == value)


def _response_mask(frame: pd.DataFrame, region: dict) -> pd.Series:
    predictions = frame[PREDICTION]
    if "field" in region:
        return predictions.map(lambda p: isinstance(p, dict) and str(p.get(region["field"])) == region["value"])
    if "response_range" in region:
        lo, hi = region["response_range"]
        values = pd.to_numeric(predictions, errors="coerce")
        return (values >= lo) & (values <= hi)
    return predictions.map(lambda p: json.dumps(p, sort_keys=True) == region["response"])


def in_region(frame: pd.DataFrame, region: dict | None) -> pd.Series:
    """Which rows of a scored candidate frame lie in a gap's region (every row when the region is None)."""
    if not region or frame.empty:
        return pd.Series(True, index=frame.index)
    if "item_refs" in region:
        return frame[ITEM_KEY].isin(region["item_refs"])
    if "column" in region:
        return _slice_mask(frame, region["column"], region["value"])
    if "feature" in region:
        values = feature_values(frame, region["feature"], region["kind"])
        if region["kind"] == "numeric":
            lo, hi = region["range"]
            return (values >= lo) & (values <= hi)
        return values.isin(region["values"])
    if frame[PREDICTION].isna().all():
        return pd.Series(False, index=frame.index)  # a predicted-response region needs predictions
    return _response_mask(frame, region)


# -- the gap kinds ------------------------------------------------------------------------------------------------
def worst_slice_gaps(spec: UseCaseSpec, evaluation: EvaluationInputs) -> list[Gap]:
    """Evaluation slices clearly below the overall row score (number: a mean absolute error well above it)."""
    number = spec.template.response_kind == "number"
    out = []
    for s in evaluation.worst_slices:
        overall = s["score"] - s["delta"]
        clearly = (
            (-s["score"] >= WORST_SLICE_RATIO * -overall and s["delta"] < 0)
            if number
            else s["delta"] <= -WORST_SLICE_DELTA
        )
        if not clearly:
            continue
        gap = abs(s["delta"]) / abs(overall) if number and overall else abs(s["delta"])
        severity = (
            "high" if gap >= (1.0 if number else 0.3) else "medium" if gap >= (0.75 if number else 0.2) else "low"
        )
        what = "mean absolute error" if number else "mean row score"
        shown = (lambda v: -v) if number else (lambda v: v)
        out.append(
            Gap(
                spec.name,
                "worst_slice",
                f"{s['column']}={s['value']}",
                f"slice {s['column']} = {s['value']}: {what} {shown(s['score']):.3f} vs {shown(overall):.3f} overall "
                f"on {s['support']} test rows (model version {evaluation.model_version})",
                {
                    "column": s["column"],
                    "value": s["value"],
                    "support": s["support"],
                    "slice_score": s["score"],
                    "overall_score": overall,
                    "delta": s["delta"],
                    "score": "-|error|" if number else "row score",
                    "model_version": evaluation.model_version,
                    "evaluation_id": evaluation.evaluation_id,
                    "test_rows": evaluation.rows,
                },
                f"label more items with {s['column']} = {s['value']} (lowest model confidence first) and retrain",
                severity,
                {"column": s["column"], "value": s["value"]},
            )
        )
    return out


def _support_gaps(
    spec: UseCaseSpec, counts: dict[str, int], total: int, what: str, region_of, recall: dict[str, float] | None = None
) -> list[Gap]:
    if not counts or not total:
        return []
    even = total / len(counts)
    out = []
    for value, count in sorted(counts.items(), key=lambda kv: (kv[1], kv[0])):
        if count >= LOW_SUPPORT_MIN and count >= LOW_SUPPORT_RATIO * even:
            continue
        evidence = {
            "value": value,
            "labels": count,
            "share": count / total,
            "training_labels": total,
            "values": len(counts),
            "even_share": 1 / len(counts),
            "min_labels": LOW_SUPPORT_MIN,
        }
        if recall and value in recall:
            evidence["test_recall"] = recall[value]
        out.append(
            Gap(
                spec.name,
                "low_support",
                f"{what}={value}",
                f"{what} {value}: {count} of {total} current training labels ({count / total:.1%}; an even "
                f"split would give {1 / len(counts):.1%})",
                evidence,
                f"label more items whose answer is {what} {value}: start with those the model predicts as "
                f"{value} with the lowest confidence",
                "high" if count < LOW_SUPPORT_MIN / 2 else "medium",
                region_of(value),
            )
        )
    return out


def low_support_gaps(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, evaluation: EvaluationInputs | None = None
) -> list[Gap]:
    """Classes, enum field values, text answers or number ranges with few current training labels."""
    labels = training_labels(spark, lakehouse, spec)
    kind, schema = spec.template.response_kind, spec.template.response_schema
    total = labels.count()
    if kind in ("enum", "text"):
        value = F.get_json_object("label_data", "$")
        found = {
            r["v"]: int(r["count"]) for r in labels.groupBy(value.alias("v")).count().collect() if r["v"] is not None
        }
        vocabulary = [str(v) for v in schema["enum"]] if kind == "enum" else list(found)
        if kind == "text" and len(found) > SLICE_MAX_DISTINCT:
            return []  # free text without a small vocabulary: no classes to count
        recall = (
            {c: m["recall"] for c, m in (evaluation.metrics.get("per_class") or {}).items()} if evaluation else None
        )
        return _support_gaps(
            spec,
            {v: found.get(v, 0) for v in vocabulary},
            total,
            "answer",
            lambda v: {"response": json.dumps(v)},
            recall,
        )
    if kind == "object":
        out = []
        for name, prop in schema.get("properties", {}).items():
            if "enum" not in prop:
                continue
            value = F.get_json_object("label_data", f"$.{name}")
            found = {
                r["v"]: int(r["count"])
                for r in labels.groupBy(value.alias("v")).count().collect()
                if r["v"] is not None
            }
            filled = sum(found.values())
            out += _support_gaps(
                spec,
                {str(v): found.get(str(v), 0) for v in prop["enum"]},
                filled,
                f"{name}",
                lambda v, n=name: {"field": n, "value": v},
            )
        return out
    value = F.get_json_object("label_data", "$").cast("double")
    bounds = labels.agg(F.min(value).alias("lo"), F.max(value).alias("hi")).first()
    lo = schema.get("minimum", bounds["lo"])
    hi = schema.get("maximum", bounds["hi"])
    if lo is None or hi is None or hi <= lo:
        return []
    lo, hi = max(float(lo), float(bounds["lo"])), min(float(hi), float(bounds["hi"]))
    if hi <= lo:
        return []
    width = (hi - lo) / NUMBER_BINS
    index = F.least(F.floor((value - F.lit(lo)) / F.lit(width)), F.lit(NUMBER_BINS - 1)).cast("int")
    counts = {
        int(r["b"]): int(r["count"]) for r in labels.groupBy(index.alias("b")).count().collect() if r["b"] is not None
    }
    ranges = {
        f"[{lo + i * width:.4g}, {lo + (i + 1) * width:.4g}]": (lo + i * width, lo + (i + 1) * width)
        for i in range(NUMBER_BINS)
    }
    by_label = {label: counts.get(i, 0) for i, label in enumerate(ranges)}
    return _support_gaps(spec, by_label, total, "answer range", lambda v: {"response_range": list(ranges[v])})


def low_confidence_gaps(
    spec: UseCaseSpec, scored: pd.DataFrame, model_version: str, candidates_total: int | None = None
) -> list[Gap]:
    """Uncertainty of the model on unlabelled/disputed items: overall, and slices clearly below the mean."""
    frame = scored[scored[CONFIDENCE].notna()]
    if frame.empty:
        return []
    mean = float(frame[CONFIDENCE].mean())
    low = int((frame[CONFIDENCE] < LOW_CONFIDENCE).sum())
    base = {
        "scored_items": len(frame),
        "mean_confidence": mean,
        "low_confidence_items": low,
        "low_share": low / len(frame),
        "threshold": LOW_CONFIDENCE,
        "model_version": model_version,
        "candidates_total": candidates_total,
    }
    out = []
    if low / len(frame) >= LOW_CONFIDENCE_SHARE:
        out.append(
            Gap(
                spec.name,
                "low_confidence",
                "overall",
                f"{low} of {len(frame)} unlabelled or disputed items ({low / len(frame):.0%}) get an answer "
                f"with confidence below {LOW_CONFIDENCE} (mean {mean:.3f}; model version {model_version})",
                base,
                "label the least confident items first (active learning) and retrain",
                "high" if low / len(frame) >= 0.5 else "medium",
                None,
            )
        )
    columns = slice_columns(spec, frame)
    if not columns:
        return out
    for s in metrics.worst_slices(frame, CONFIDENCE, columns, min_support=MIN_REGION, limit=10):
        if s["delta"] > -LOW_CONFIDENCE_DELTA:
            continue
        mask = _slice_mask(frame, s["column"], s["value"])
        region_low = int((frame.loc[mask, CONFIDENCE] < LOW_CONFIDENCE).sum())
        out.append(
            Gap(
                spec.name,
                "low_confidence",
                f"{s['column']}={s['value']}",
                f"items with {s['column']} = {s['value']}: mean confidence {s['score']:.3f} vs {mean:.3f} "
                f"over {len(frame)} unlabelled or disputed items ({s['support']} in the slice)",
                {
                    **base,
                    "column": s["column"],
                    "value": s["value"],
                    "support": s["support"],
                    "slice_mean_confidence": s["score"],
                    "delta": s["delta"],
                    "slice_low_confidence_items": region_low,
                },
                f"label the least confident items with {s['column']} = {s['value']}",
                "high" if s["delta"] <= -0.25 else "medium",
                {"column": s["column"], "value": s["value"]},
            )
        )
    return out


def drift_region(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    report: MonitoringReport,
    feature: str,
    kind: str,
    sheet_table: str | None,
) -> tuple[dict | None, dict]:
    """(region, evidence) of a drifted feature: where the served values of the report's window concentrate compared
    with the sheet's items (or, for the prediction, the current labels). Only aggregates leave Spark."""
    expr = features(spec, image_root=lakehouse.volume_path())[feature][1]
    columns = [c.name for c in spec.sheet.columns]
    requests = window_requests(spark, lakehouse, spec.serving.endpoint_name, report.window)
    served = served_records(requests).select(*[F.col("inputs")[c].alias(c) for c in columns], PREDICTION)
    if feature.split(":")[0] == PREDICTION:
        labels = current_labels(spark, lakehouse, spec.name, spec.labels.label_type, with_conflicts=False)
        reference = labels.select(scalar_text(F.col("label_data")).alias(PREDICTION))
    else:
        reference = (
            lakehouse.read(spark, sheet_table).select(*[F.col(c).cast("string").alias(c) for c in columns])
            if sheet_table
            else None
        )
    if kind == "numeric":
        q = [0.1, 0.5, 0.9]
        cur = served.agg(F.percentile_approx(expr, q).alias("q")).first()["q"]
        if not cur:
            return None, {}
        evidence = {"served_p10": cur[0], "served_p50": cur[1], "served_p90": cur[2]}
        if reference is not None:
            ref = reference.agg(F.percentile_approx(expr, q).alias("q")).first()["q"]
            if ref:
                evidence.update(reference_p10=ref[0], reference_p50=ref[1], reference_p90=ref[2])
        return {"feature": feature, "kind": kind, "range": [cur[0], cur[2]]}, evidence

    def shares(frame: DataFrame) -> dict[str, float]:
        rows = frame.groupBy(F.coalesce(expr, F.lit("(null)")).alias("v")).count().collect()
        total = sum(r["count"] for r in rows)
        return {r["v"]: r["count"] / total for r in rows} if total else {}

    cur = shares(served)
    ref = shares(reference) if reference is not None else {}
    grown = sorted(((v, s - ref.get(v, 0.0)) for v, s in cur.items()), key=lambda vs: -vs[1])
    values = [v for v, d in grown if d >= 0.05] or [v for v, _ in grown[:1]]
    evidence = {"served_share": {v: cur[v] for v in values}, "reference_share": {v: ref.get(v, 0.0) for v in values}}
    return {"feature": feature, "kind": kind, "values": values}, evidence


def drift_gaps(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, report: MonitoringReport, sheet_table: str | None
) -> list[Gap]:
    """One gap per input (or prediction) flagged as drifted in the monitoring report."""
    out = []
    threshold = spec.monitoring.psi_threshold
    for d in report.drift:
        if not d.drifted:
            continue
        region, extra = drift_region(spark, lakehouse, spec, report, d.column, d.kind, sheet_table)
        what = "the predictions" if d.column.split(":")[0] == PREDICTION else f"input {d.column}"
        out.append(
            Gap(
                spec.name,
                "drift",
                d.column,
                f"{what} drifted in monitoring report {report.report_id[:12]}: PSI {d.psi:.3f} "
                f"(threshold {threshold:g}), "
                f"{d.test} p = {d.p_value:.3g}, {d.current_rows} served vs {d.reference_rows} training rows",
                {
                    **d.record(),
                    "psi_threshold": threshold,
                    "report_id": report.report_id,
                    "window_start": report.window.start.isoformat(),
                    "window_end": report.window.end.isoformat(),
                    **extra,
                },
                f"label items like the drifted traffic ({d.column} in the served range) and retrain; check the source "
                "of the shift",
                "high" if d.psi >= 2 * threshold else "medium",
                region,
            )
        )
    return out


def negative_feedback_gaps(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, sheet_items: DataFrame | None = None
) -> list[Gap]:
    """Items with repeated negative feedback, and answers whose judged share of negative feedback is high."""
    fb = negative_feedback(spark, lakehouse, spec).cache()
    try:
        per_item = (
            fb.filter(F.col(ITEM_KEY).isNotNull())
            .groupBy(ITEM_KEY)
            .agg(
                F.sum(F.col("negative").cast("int")).alias("negative"),
                F.sum((F.col("rating") == "down").cast("int")).alias("down"),
                F.sum(F.col("correction").isNotNull().cast("int")).alias("corrections"),
                F.sum((F.col("rating") == "up").cast("int")).alias("up"),
            )
            .filter(F.col("negative") >= NEGATIVE_MIN)
        )
        if sheet_items is not None:
            per_item = per_item.join(
                sheet_items.select(ITEM_KEY, F.lit(True).alias("in_sheet")), ITEM_KEY, "left"
            ).withColumn("in_sheet", F.coalesce("in_sheet", F.lit(False)))
        else:
            per_item = per_item.withColumn("in_sheet", F.lit(None).cast("boolean"))
        repeated = per_item.count()
        top = per_item.orderBy(F.desc("negative"), ITEM_KEY).limit(MAX_ITEMS_IN_EVIDENCE).collect()
        patterns = (
            (
                fb.filter(F.col(PREDICTION).isNotNull())
                .groupBy(PREDICTION)
                .agg(F.count(F.lit(1)).alias("judged"), F.sum(F.col("negative").cast("int")).alias("negative"))
                .collect()
            )
            if spec.template.response_kind in ("enum", "text")
            else []
        )
    finally:
        fb.unpersist()
    out = []
    if top:
        items = [
            {
                "item_ref": r[ITEM_KEY],
                "negative": int(r["negative"]),
                "down": int(r["down"]),
                "corrections": int(r["corrections"]),
                "up": int(r["up"]),
                "in_sheet": r["in_sheet"],
            }
            for r in top
        ]
        labelable = [i["item_ref"] for i in items if i["in_sheet"] is not False]
        out.append(
            Gap(
                spec.name,
                "negative_feedback",
                "items",
                f"{repeated} item(s) got {NEGATIVE_MIN} or more thumbs-down or corrections (worst: "
                f"{items[0]['item_ref']} with {items[0]['negative']})",
                {
                    "items_with_repeated_negative_feedback": repeated,
                    "min_negative": NEGATIVE_MIN,
                    "items": items,
                    "in_sheet": len(labelable),
                },
                "review these items and set their label (a correction that keeps coming back is a label "
                "the model has not learnt)",
                "high" if items[0]["negative"] >= 2 * NEGATIVE_MIN else "medium",
                {"item_refs": labelable},
            )
        )
    judged = sum(int(r["judged"]) for r in patterns)
    overall = sum(int(r["negative"] or 0) for r in patterns) / judged if judged else 0.0
    for r in sorted(patterns, key=lambda r: str(r[PREDICTION])):
        negative, count = int(r["negative"] or 0), int(r["judged"])
        rate = negative / count
        if negative < PATTERN_MIN or rate < max(PATTERN_RATE, overall):
            continue
        answer = r[PREDICTION]
        out.append(
            Gap(
                spec.name,
                "negative_feedback",
                f"answer={answer}",
                f"answers {answer!r} drew negative feedback {negative} of {count} times ({rate:.0%}; "
                f"{overall:.0%} over all judged answers)",
                {
                    "answer": answer,
                    "judged": count,
                    "negative": negative,
                    "negative_rate": rate,
                    "overall_negative_rate": overall,
                },
                f"label items the model answers {answer!r}, least confident first, to fix what it confuses",
                "high" if rate >= 0.75 else "medium",
                {"response": json.dumps(answer)},
            )
        )
    return out


# -- the report ---------------------------------------------------------------------------------------------------
def find_gaps(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, inputs: GapInputs, sheet_table: str | None
) -> list[Gap]:
    """Every gap kind that the inputs allow; `inputs.notes` gets the reason for each kind left out."""
    gaps: list[Gap] = []
    if inputs.evaluation is not None:
        gaps += worst_slice_gaps(spec, inputs.evaluation)
        if not inputs.evaluation.worst_slices:
            inputs.notes["worst_slice"] = "the evaluation report has no slices"
    else:
        inputs.notes["worst_slice"] = "no stored evaluation (materialize model_evaluation)"
    gaps += low_support_gaps(spark, lakehouse, spec, inputs.evaluation)
    if inputs.scored is not None and inputs.model_version is not None:
        gaps += low_confidence_gaps(spec, inputs.scored, inputs.model_version, len(inputs.scored))
    else:
        inputs.notes["low_confidence"] = (
            "no model to score items with (no champion and no evaluated version)"
            if inputs.model_version is None
            else "no sheet items to score"
        )
    report = inputs.monitoring
    if report is None:
        inputs.notes["drift"] = "no monitoring report (materialize monitoring_report)"
    elif not report.drift:
        inputs.notes["drift"] = f"drift not assessed in monitoring report {report.report_id[:12]}"
    else:
        gaps += drift_gaps(spark, lakehouse, spec, report, sheet_table)
    sheet_items = lakehouse.read(spark, sheet_table).select(ITEM_KEY) if sheet_table else None
    gaps += negative_feedback_gaps(spark, lakehouse, spec, sheet_items)
    order = {s: i for i, s in enumerate(PRIORITY)}
    return sorted(gaps, key=lambda g: (order[g.severity], KINDS.index(g.kind), g.subject))


def report_id(use_case: str, run_id: str | None = None) -> str:
    """One id per materialization (deterministic in the run id when there is one)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ontos-gap-report/{use_case}/{run_id}").hex if run_id else uuid.uuid4().hex


def record_gaps(lakehouse: Lakehouse, use_case: str, gaps: Sequence[Gap], report: str) -> int:
    """Replace the use case's rows of gap_reports with this report's gaps in one commit; returns the table version."""
    now = datetime.now(UTC)
    return lakehouse.replace_records(GAPS, [g.record(report, now) for g in gaps], {"use_case": use_case})


def stored_gaps(lakehouse: Lakehouse, use_case: str) -> list[dict]:
    """The current gaps of a use case (rows of gap_reports, evidence parsed), most severe first."""
    rows = lakehouse.records(GAPS, {"use_case": use_case})
    for r in rows:
        r["evidence"] = json.loads(r["evidence"])
    return sorted(
        rows,
        key=lambda r: (
            PRIORITY.get(r["severity"], 9),
            KINDS.index(r["kind"]) if r["kind"] in KINDS else 9,
            r["gap_id"],
        ),
    )


def markdown(gaps: Sequence[Gap | dict], top: int = 15) -> str:
    """A markdown table of the top gaps."""
    rows = []
    for g in list(gaps)[:top]:
        d = (
            g
            if isinstance(g, dict)
            else {
                "severity": g.severity,
                "kind": g.kind,
                "subject": g.subject,
                "description": g.description,
                "suggested_action": g.suggested_action,
            }
        )
        subject = d.get("subject") or d.get("evidence", {}).get("subject", "")
        rows.append([d["severity"], d["kind"], subject, d["description"], d["suggested_action"]])
    return markdown_table(
        rows, ["severity", "kind", "subject", "description", "suggested action"], width=160, empty="(no gaps)"
    )
