"""Monitoring of one endpoint over a time window, computed in Spark from the inference log and the feedback.

Operational metrics come from every logged request; drift compares the records answered successfully with the
model's training rows (input features by column category, and the predictions with the training responses). An image
column is monitored through per-image statistics computed on the executors (a pandas UDF reading each cell, path or
inline content): mean brightness, contrast (pixel standard deviation), width, height, and whether it is unreadable.
Feedback on number answers is scored by error: a correction within the trainer's tolerance (10% of the training
responses' range) counts as correct, and the corrections' MAE is reported. Only aggregates leave Spark.

When the window's requests were answered by more than one model version (an A/B test, or a swap), the report has
the arms too (`ab_test`): per version requests, error rate, p95 latency, thumbs-up share of rated answers and
accuracy (feedback joins to the version that answered, by request id), and `deploy.ab_test.compare`'s
challenger-minus-champion difference with its interval and verdict (the comparison a deploy concludes a test on).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import Window as SparkWindow
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ontos_pipeline.deploy import ab_test
from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.deploy.serving.redaction import hidden_in_log
from ontos_pipeline.generate.training_sheet import QA
from ontos_pipeline.label.feedback import FEEDBACK
from ontos_pipeline.monitor.alerts import Breach
from ontos_pipeline.monitor.drift import Drift, categorical_drift, numeric_drift
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.images import ImageError, open_image
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec
from ontos_pipeline.train.training_data import SPLIT, model_rows

REPORTS = tables.MONITORING_REPORTS
PREDICTION = "prediction"
QUANTILES = [i / 20 for i in range(21)]
_RECORDS = T.ArrayType(T.MapType(T.StringType(), T.StringType()))
_ANSWERS = T.ArrayType(
    T.StructType([T.StructField("response", T.StringType()), T.StructField("confidence", T.DoubleType())])
)
IMAGE_STATS = ("brightness", "contrast", "width", "height")  # numeric statistics of an image column
UNREADABLE = "unreadable"  # and a categorical one: "true" when the cell is no readable image
_IMAGE_STATS_TYPE = T.StructType(
    [T.StructField(n, T.DoubleType()) for n in IMAGE_STATS] + [T.StructField(UNREADABLE, T.StringType())]
)
STATS_SIDE = 512  # brightness and contrast are measured on the image reduced to fit STATS_SIDE x STATS_SIDE
NUMBER_TOLERANCE = 0.1  # share of the target range within which a number answer counts as right (as the trainer)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass
class MonitoringReport:
    report_id: str
    use_case: str
    endpoint_name: str
    window: Window
    request_count: int
    error_rate: float | None
    latency_ms: dict[str, float | None]
    records: int
    positive_feedback_rate: float | None
    accuracy: float | None
    feedback_count: int
    response_distribution: dict
    drift: list[Drift] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    number_feedback: dict = field(default_factory=dict)  # number answers: corrections, mae, tolerance, within
    ab_test: dict | None = None  # more than one model version answered: {"arms": [...], "comparison": {...}}

    @property
    def comparison(self) -> ab_test.Comparison | None:
        """The champion-challenger comparison of the window (None when one version answered)."""
        return ab_test.Comparison.from_record(self.ab_test["comparison"]) if self.ab_test else None

    @property
    def drifted(self) -> list[str]:
        return [d.column for d in self.drift if d.drifted]

    @classmethod
    def from_record(cls, row: dict) -> MonitoringReport:
        """A stored report (a `monitoring_reports` row) back as an object: the check re-reads the latest one."""
        return cls(
            row["report_id"],
            row["use_case"],
            row["endpoint_name"],
            Window(row["window_start"], row["window_end"]),
            row["request_count"],
            row["error_rate"],
            {"p50": row["latency_p50_ms"], "p95": row["latency_p95_ms"], "p99": row["latency_p99_ms"]},
            0,
            row["positive_feedback_rate"],
            row["accuracy"],
            0,
            json.loads(row["response_distribution"] or "{}"),
            [Drift(**d) for d in json.loads(row["drift"] or "[]")],
            ab_test=json.loads(row["ab_test"]) if row.get("ab_test") else None,
        )

    def record(self) -> dict:
        return {
            "report_id": self.report_id,
            "use_case": self.use_case,
            "endpoint_name": self.endpoint_name,
            "window_start": self.window.start,
            "window_end": self.window.end,
            "request_count": self.request_count,
            "error_rate": self.error_rate,
            "latency_p50_ms": self.latency_ms["p50"],
            "latency_p95_ms": self.latency_ms["p95"],
            "latency_p99_ms": self.latency_ms["p99"],
            "positive_feedback_rate": self.positive_feedback_rate,
            "accuracy": self.accuracy,
            "response_distribution": json.dumps(self.response_distribution),
            "drift": json.dumps([d.record() for d in self.drift]),
            "created_at": datetime.now(UTC),
            "ab_test": json.dumps(self.ab_test) if self.ab_test else None,
        }


def features(
    spec: UseCaseSpec, precomputed: bool = False, image_root: str | None = None
) -> dict[str, tuple[str, Column]]:
    """Monitored input features -> (numeric | categorical, expression); values that do not parse count as missing.

    Image columns give `<column>:brightness|contrast|width|height` (numeric) and `<column>:unreadable`
    (categorical); their expressions run the image UDF (relative cells read under `image_root`), or read
    `with_image_stats` columns when `precomputed`."""
    out: dict[str, tuple[str, Column]] = {}
    hidden = hidden_in_log(spec)  # redacted or hashed in the inference log: nothing to compare
    for c in spec.sheet.columns:
        if c.name in hidden:
            continue
        if c.category == "numeric":
            out[c.name] = ("numeric", F.col(c.name).try_cast("double"))
        elif c.category == "categorical" or (c.category != "metadata" and c.type == "boolean"):
            out[c.name] = ("categorical", F.lower(F.col(c.name).cast("string")))
        elif c.category == "text":
            out[f"{c.name}:length"] = ("numeric", F.length(F.col(c.name)).cast("double"))
        elif c.category == "image":
            stats = F.col(_stats_column(c.name)) if precomputed else image_stats_udf(image_root)(F.col(c.name))
            for name in IMAGE_STATS:
                out[f"{c.name}:{name}"] = ("numeric", stats[name])
            out[f"{c.name}:{UNREADABLE}"] = ("categorical", stats[UNREADABLE])
    kind = spec.template.response_kind
    if kind == "enum":
        out[PREDICTION] = ("categorical", F.col(PREDICTION))
    elif kind == "number":
        out[PREDICTION] = ("numeric", F.col(PREDICTION).try_cast("double"))
    else:
        out[f"{PREDICTION}:length"] = ("numeric", F.length(F.col(PREDICTION)).cast("double"))
    return out


def image_statistics(cells: pd.Series, root: str | None = None) -> pd.DataFrame:
    """Per image cell (a path, a relative one read under `root`, or inline content): mean brightness and contrast
    (standard deviation) of its grey levels in [0, 1], width and height in pixels, and `unreadable` ("true"/"false");
    all null for a null cell, only `unreadable` set for a cell that is no readable image."""
    from PIL import Image

    rows = []
    for value in cells:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            rows.append((None, None, None, None, None))
            continue
        try:
            image = open_image(str(value), root)
        except (ImageError, OSError, ValueError, Image.DecompressionBombError):
            rows.append((None, None, None, None, "true"))
            continue
        with image:
            width, height = image.size
            grey = image.convert("L")
            grey.thumbnail((STATS_SIDE, STATS_SIDE))
            levels = np.asarray(grey, dtype=np.float64) / 255.0
        rows.append((float(levels.mean()), float(levels.std()), float(width), float(height), "false"))
    return pd.DataFrame(rows, columns=[*IMAGE_STATS, UNREADABLE], index=cells.index)


def image_stats_udf(root: str | None = None):
    """`image_statistics` as a pandas UDF returning a struct (made on call: a UDF needs a session first)."""

    def stats(cells: pd.Series) -> pd.DataFrame:
        return image_statistics(cells, root)

    return F.pandas_udf(stats, _IMAGE_STATS_TYPE)


def with_image_stats(frame: DataFrame, columns: list[str], root: str | None = None) -> DataFrame:
    """`frame` plus one struct of image statistics per image column (what `features(spec, precomputed=True)` reads)."""
    udf = image_stats_udf(root)
    return frame.withColumns({_stats_column(c): udf(F.col(c)) for c in columns})


def _stats_column(name: str) -> str:
    return f"__image_stats_{name}"


def window_requests(spark: SparkSession, lakehouse: Lakehouse, endpoint: str, window: Window) -> DataFrame:
    return lakehouse.read(spark, INFERENCE_LOG).filter(
        (F.col("endpoint_name") == endpoint)
        & (F.col("request_time") >= F.lit(window.start))
        & (F.col("request_time") < F.lit(window.end))
    )


def served_records(requests: DataFrame) -> DataFrame:
    """One row per answered record: its input columns (as text), the prediction (JSON scalar as text), request id."""
    ok = requests.filter(F.col("status_code") == 200).select(
        "request_id",
        "request_time",
        "model_version",
        F.from_json("inputs", _RECORDS).alias("records"),
        F.from_json("response", _ANSWERS).alias("answers"),
    )
    return ok.select(
        "request_id",
        "request_time",
        "model_version",
        F.size("records").alias("batch"),
        F.explode(F.arrays_zip("records", "answers")).alias("r"),
    ).select(
        "request_id",
        "request_time",
        "model_version",
        "batch",
        F.col("r.records").alias("inputs"),
        F.col("r.answers.response").alias(PREDICTION),
        F.col("r.answers.confidence").alias("confidence"),
    )


def scalar_text(column: Column) -> Column:
    """A JSON value as text, the way `from_json` gives string fields: strings unquoted, the rest as written."""
    return F.from_json(F.concat(F.lit("["), column, F.lit("]")), T.ArrayType(T.StringType()))[0]


def report_id(use_case: str, run_id: str | None = None) -> str:
    """One id per materialization (deterministic in the Dagster run id when there is one)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ontos-monitoring/{use_case}/{run_id}").hex if run_id else uuid.uuid4().hex


def monitor(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    window: Window,
    reference: DataFrame | None,
    run_id: str | None = None,
    champion: str | None = None,
    challenger: str | None = None,
) -> MonitoringReport:
    """The report of `spec`'s endpoint over `window`; `reference` is the training rows (item columns + response),
    None when no model is served (no drift then). `champion` and `challenger` (the A/B arm) name the versions the
    arms' comparison puts against each other when more than one version answered (default: the two versions with
    the most requests, the first as champion)."""
    m = spec.monitoring
    requests = window_requests(spark, lakehouse, spec.serving.endpoint_name, window).cache()
    try:
        ops = requests.agg(
            F.count(F.lit(1)).alias("n"),
            F.sum((F.col("status_code") != 200).cast("int")).alias("errors"),
            F.percentile("latency_ms", [0.5, 0.95, 0.99]).alias("p"),
        ).first()
        n = int(ops["n"])
        status_counts = {
            str(r["status_code"]): int(r["count"]) for r in requests.groupBy("status_code").count().collect()
        }
        records = served_records(requests)
        columns = [c.name for c in spec.sheet.columns if c.category != "metadata" or c.type == "boolean"]
        current = records.select(*[F.col("inputs")[c].alias(c) for c in columns], PREDICTION).cache()
        count = current.count()
        distribution = response_distribution(current, spec.template.response_kind)
        drift = []
        if reference is not None and count >= m.min_rows:
            ref = reference.select(
                *[F.col(c).cast("string").alias(c) for c in columns], scalar_text(F.col("response")).alias(PREDICTION)
            )
            drift = drift_of(spec, ref, current, m.psi_threshold, m.p_value, lakehouse.volume_path())
        current.unpersist()
        tolerance = number_tolerance(spec, reference) if spec.template.response_kind == "number" else None
        positive, accuracy, judged, numbers = feedback_metrics(spark, lakehouse, spec, records, window, tolerance)
        arms = arm_comparison(spark, lakehouse, spec, requests, records, tolerance, champion, challenger)
    finally:
        requests.unpersist()
    p = ops["p"] or [None, None, None]
    return MonitoringReport(
        report_id(spec.name, run_id),
        spec.name,
        spec.serving.endpoint_name,
        window,
        n,
        None if n == 0 else int(ops["errors"]) / n,
        {"p50": p[0], "p95": p[1], "p99": p[2]},
        count,
        positive,
        accuracy,
        judged,
        distribution,
        drift,
        status_counts,
        numbers,
        arms,
    )


def arm_comparison(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    requests: DataFrame,
    records: DataFrame,
    tolerance: float | None,
    champion: str | None = None,
    challenger: str | None = None,
) -> dict | None:
    """Per model version of the window's requests: `ab_test.ArmStats`, and the comparison of the challenger arm
    with the champion's (`ab_test.compare`, with the spec's `serving.ab_test` min_requests and confidence); None
    when one version (or none) answered."""
    ops = (
        requests.filter(F.col("model_version").isNotNull())
        .groupBy("model_version")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum((F.col("status_code") != 200).cast("int")).alias("errors"),
            F.percentile("latency_ms", 0.95).alias("p95"),
        )
        .collect()
    )
    if len(ops) < 2:
        return None
    judged = _judged(spark, lakehouse, spec, records, tolerance)
    scores = {
        r["model_version"]: r
        for r in judged.groupBy("model_version")
        .agg(
            F.count(F.lit(1)).alias("judged"),
            F.sum((F.col("rating") == "up").cast("int")).alias("up"),
            F.sum(F.col("rating").isNotNull().cast("int")).alias("rated"),
            F.sum(F.col("correct").cast("int")).alias("correct"),
        )
        .collect()
    }
    arms = {}
    for r in ops:
        version, fb = str(r["model_version"]), scores.get(r["model_version"])
        arms[version] = ab_test.ArmStats(
            version,
            int(r["n"]),
            int(r["errors"] or 0),
            None if r["p95"] is None else float(r["p95"]),
            int(fb["rated"] or 0) if fb else 0,
            int(fb["up"] or 0) if fb else 0,
            int(fb["judged"] or 0) if fb else 0,
            int(fb["correct"] or 0) if fb else 0,
        )
    by_requests = sorted(arms, key=lambda v: (-arms[v].requests, v))
    first = champion if champion in arms else by_requests[0]
    second = challenger if challenger in arms and challenger != first else next(v for v in by_requests if v != first)
    ab = spec.serving.ab_test
    comparison = ab_test.compare(arms[first], arms[second], ab.min_requests, ab.confidence)
    return {"arms": [arms[v].record() for v in by_requests], "comparison": comparison.record()}


NO_ANSWER = "(no answer)"  # a request answered without a prediction (a guardrail withheld or refused it)


def response_distribution(current: DataFrame, kind: str) -> dict:
    if kind == "enum":
        return {r[PREDICTION]: int(r["count"]) for r in current.groupBy(PREDICTION).count().collect()}
    if kind == "number":
        row = current.agg(
            F.percentile(F.col(PREDICTION).try_cast("double"), [0.0, 0.25, 0.5, 0.75, 1.0]).alias("q")
        ).first()
        return dict(zip(["min", "p25", "p50", "p75", "max"], row["q"] or [], strict=False))
    top = current.groupBy(PREDICTION).count().orderBy(F.desc("count"), PREDICTION).limit(5).collect()
    return {
        "distinct": current.select(PREDICTION).distinct().count(),
        "top": {NO_ANSWER if r[PREDICTION] is None else r[PREDICTION][:80]: int(r["count"]) for r in top},
    }


def drift_of(
    spec: UseCaseSpec,
    reference: DataFrame,
    current: DataFrame,
    psi_threshold: float,
    level: float,
    image_root: str | None = None,
) -> list[Drift]:
    images = [c.name for c in spec.sheet.columns_of("image")]
    if images:  # each image is read once per side: its statistics are cached with the rows
        reference = with_image_stats(reference, images, image_root).cache()
        current = with_image_stats(current, images, image_root).cache()
    try:
        feats = features(spec, precomputed=True)
        numeric = {name: expr for name, (kind, expr) in feats.items() if kind == "numeric"}
        edges = _edges(reference, numeric)
        ref_bins, cur_bins = _bins(reference, feats, edges), _bins(current, feats, edges)
    finally:
        if images:
            reference.unpersist()
            current.unpersist()
    out = []
    for name, (kind, _) in feats.items():
        r, c = ref_bins.get(name, {}), cur_bins.get(name, {})
        if kind == "numeric":
            if name not in edges:
                continue
            keys = [str(i) for i in range(len(QUANTILES) + 1)]
            out.append(
                numeric_drift(name, [r.get(k, 0) for k in keys], [c.get(k, 0) for k in keys], psi_threshold, level)
            )
        else:
            out.append(categorical_drift(name, r, c, psi_threshold, level))
    return out


def _edges(reference: DataFrame, numeric: dict[str, Column]) -> dict[str, list[float]]:
    if not numeric:
        return {}
    values = reference.select(*[e.alias(f"f{i}") for i, e in enumerate(numeric.values())])
    quantiles = values.approxQuantile(list(values.columns), QUANTILES, 0.001)
    return {name: q for name, q in zip(numeric, quantiles, strict=True) if q}


def _bins(frame: DataFrame, feats: dict[str, tuple[str, Column]], edges: dict[str, list[float]]) -> dict:
    """feature -> {bin: count}; numeric bins: 0 below the reference minimum, 1..20 quantile bins, 21 above."""
    cells = []
    for name, (kind, expr) in feats.items():
        if kind == "numeric":
            if name not in edges:
                continue
            e = edges[name]
            inner = sum((expr >= F.lit(x)).cast("int") for x in e[1:-1])
            bucket = F.when(expr < F.lit(e[0]), 0).when(expr > F.lit(e[-1]), len(e)).otherwise(1 + inner)
            cells.append(
                F.struct(
                    F.lit(name).alias("feature"), bucket.cast("string").alias("bin"), expr.isNull().alias("missing")
                )
            )
        else:
            cells.append(
                F.struct(
                    F.lit(name).alias("feature"),
                    F.coalesce(expr, F.lit("(null)")).alias("bin"),
                    F.lit(False).alias("missing"),
                )
            )
    long = frame.select(F.explode(F.array(*cells)).alias("c")).filter(~F.col("c.missing"))
    out: dict[str, dict[str, int]] = {}
    for row in long.groupBy("c.feature", "c.bin").count().collect():
        out.setdefault(row["feature"], {})[row["bin"]] = int(row["count"])
    return out


def number_tolerance(spec: UseCaseSpec, reference: DataFrame | None) -> float | None:
    """How far a number answer may be from the truth and still count as right: NUMBER_TOLERANCE of the range of the
    training responses (the trainer's confidence uses the same), else of the schema's minimum..maximum; None when
    neither is known."""
    if reference is not None:
        value = scalar_text(F.col("response")).try_cast("double")
        row = reference.agg(F.min(value).alias("lo"), F.max(value).alias("hi")).first()
        if row["lo"] is not None:
            return NUMBER_TOLERANCE * ((row["hi"] - row["lo"]) or 1.0)
    schema = spec.template.response_schema
    if isinstance(schema.get("minimum"), int | float) and isinstance(schema.get("maximum"), int | float):
        return NUMBER_TOLERANCE * ((schema["maximum"] - schema["minimum"]) or 1.0)
    return None


def feedback_metrics(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    records: DataFrame,
    window: Window,
    tolerance: float | None = None,
) -> tuple[float | None, float | None, int, dict]:
    """(positive-feedback rate, accuracy, records judged, number scores) for the window's answered records.

    The latest accepted feedback per (request, item) counts. A correction is the ground truth: for number answers
    correct when within `tolerance` of the prediction (never when no tolerance is known), otherwise when it equals
    the prediction; without one, thumbs up means correct and thumbs down wrong. Number scores (number answers only,
    else empty): corrections, mae (mean absolute error of the predictions they correct), tolerance, within_tolerance
    (share of corrections within it).
    """
    joined = _judged(spark, lakehouse, spec, records, tolerance)
    number = spec.template.response_kind == "number"
    corrected = F.col("correction").isNotNull()
    error = F.abs(F.col("correction").try_cast("double") - F.col(PREDICTION).try_cast("double"))
    within = F.coalesce(error <= F.lit(tolerance), F.lit(False)) if tolerance is not None else F.lit(False)
    row = joined.agg(
        F.count(F.lit(1)).alias("judged"),
        F.sum((F.col("rating") == "up").cast("int")).alias("up"),
        F.sum(F.col("rating").isNotNull().cast("int")).alias("rated"),
        F.sum(F.col("correct").cast("int")).alias("correct"),
        F.sum(corrected.cast("int")).alias("corrections"),
        F.avg(F.when(corrected, error)).alias("mae"),
        F.sum((corrected & within).cast("int")).alias("within"),
    ).first()
    judged, rated = int(row["judged"]), int(row["rated"] or 0)
    numbers = {}
    if number:
        n = int(row["corrections"] or 0)
        numbers = {
            "corrections": n,
            "mae": row["mae"],
            "tolerance": tolerance,
            "within_tolerance": (row["within"] or 0) / n if n and tolerance is not None else None,
        }
    positive = (row["up"] or 0) / rated if rated else None
    return positive, (row["correct"] or 0) / judged if judged else None, judged, numbers


def _judged(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, records: DataFrame, tolerance: float | None
) -> DataFrame:
    """The latest accepted feedback per (request, item) joined to the answered record it is about (with the
    `model_version` that answered), and whether the answer was right (`correct`: `feedback_metrics`' rule)."""
    feedback = lakehouse.read(spark, FEEDBACK).filter(
        (F.col("use_case") == spec.name) & (F.col("status") != "rejected") & F.col("request_id").isNotNull()
    )
    by_answer = SparkWindow.partitionBy("request_id", "item_ref").orderBy(F.desc("seq"))
    latest = feedback.withColumn("rank", F.row_number().over(by_answer)).filter(F.col("rank") == 1)
    answered = records.select(
        "request_id", "model_version", "batch", F.col("inputs")[ITEM_KEY].alias("record_ref"), PREDICTION
    )
    joined = latest.join(answered, "request_id").filter(
        (F.col("batch") == 1) | (F.col("item_ref") == F.col("record_ref"))
    )
    number = spec.template.response_kind == "number"
    corrected = F.col("correction").isNotNull()
    error = F.abs(F.col("correction").try_cast("double") - F.col(PREDICTION).try_cast("double"))
    within = F.coalesce(error <= F.lit(tolerance), F.lit(False)) if tolerance is not None else F.lit(False)
    if number:
        right = within
    else:
        canonical = _canonical(spec.template.response_kind)
        right = canonical(F.col("correction"), F.lit(True)) == canonical(F.col(PREDICTION), F.lit(False))
    return joined.withColumn("correct", F.when(corrected, right).otherwise(F.col("rating") == "up"))


def _canonical(kind: str):
    """A UDF: JSON text (or, for predictions of string kinds, the bare string) -> canonical JSON text."""

    def canon(text, is_json):  # no type hints: Spark would try to infer a pandas UDF from them
        if text is None:
            return None
        if not is_json and kind in ("enum", "text"):
            return json.dumps(text, ensure_ascii=False)
        try:
            return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)
        except json.JSONDecodeError:
            return json.dumps(text, ensure_ascii=False)

    return F.udf(canon, T.StringType())


def breaches(report: MonitoringReport, spec: UseCaseSpec) -> list[Breach]:
    """The report's metrics beyond the spec's thresholds."""
    m = spec.monitoring
    out = [Breach("drift", f"psi[{d.column}]", d.psi, m.psi_threshold, ">=") for d in report.drift if d.drifted]
    if report.error_rate is not None and report.error_rate > m.max_error_rate:
        out.append(Breach("error_rate", "error_rate", report.error_rate, m.max_error_rate, ">"))
    p95 = report.latency_ms["p95"]
    if p95 is not None and p95 > m.max_latency_p95_ms:
        out.append(Breach("latency", "latency_p95_ms", p95, m.max_latency_p95_ms, ">"))
    if m.min_accuracy is not None and report.accuracy is not None and report.accuracy < m.min_accuracy:
        out.append(Breach("accuracy", "accuracy", report.accuracy, m.min_accuracy, "<"))
    rate = report.positive_feedback_rate
    if m.min_positive_feedback_rate is not None and rate is not None and rate < m.min_positive_feedback_rate:
        out.append(Breach("feedback", "positive_feedback_rate", rate, m.min_positive_feedback_rate, "<"))
    return out


def training_reference(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, pack: dict) -> DataFrame:
    """The train split a model learned from (its pack's `qa_pairs` version and sheet snapshot, time travel)."""
    data = pack["data"]
    qa = lakehouse.read(spark, QA, version=int(data["qa_pairs_table_version"])).filter(
        (F.col("training_sheet_id") == data["training_sheet_id"]) & (F.col("version") == data["training_sheet_version"])
    )
    return model_rows(spark, lakehouse, spec, qa, data["sheet_table"], "training").filter(F.col(SPLIT) == "train")


def report_order(row: dict) -> tuple:
    """Reports ordered by the window they cover (then by when they were computed)."""
    return row["window_end"], row["window_start"], row["created_at"]


def latest_report(lakehouse: Lakehouse, spec: UseCaseSpec, run_id: str | None = None) -> MonitoringReport | None:
    """The report a run computed (`run_id`), else the report of the most recent window (a report computed later
    for an earlier window is not the latest)."""
    rows = lakehouse.records(REPORTS, {"use_case": spec.name})
    own = report_id(spec.name, run_id) if run_id else None
    mine = [r for r in rows if r["report_id"] == own]
    return MonitoringReport.from_record(max(mine or rows, key=report_order)) if rows else None
