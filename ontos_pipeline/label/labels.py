"""LABEL stage: merge every label source into canonical labels (label an item once, reuse it everywhere).

Sources (one `LabelSource` each): the initial import table, label files in the inbox (`ontos labels import`),
review edits, and later feedback corrections. Every candidate is validated against the template's response
schema; invalid ones and labels for unknown items go to `label_rejects` with the reason. Per key
(sheet_id, item_ref, label_type) the highest-precedence source wins (review > expert > feedback > import, then
the newest); disagreeing candidates at the winning precedence are recorded in `label_conflicts` and flagged,
never silently resolved. History is append-only (`canonical_labels`), the current label is the latest version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ontos_pipeline.data.sheet import SheetSnapshot
from ontos_pipeline.label.import_layout import check_import_layout
from ontos_pipeline.label.label_files import (
    CANDIDATE_FIELDS,
    INBOX_SUFFIXES,
    inbox_dir,
    parse_label_file,
    response_validator,
    validate_label,
)
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse, python_rows
from ontos_pipeline.specs import ITEM_KEY, USES, UseCaseSpec

LABELS, REJECTS, CONFLICTS, REVIEWS = (
    tables.CANONICAL_LABELS,
    tables.LABEL_REJECTS,
    tables.LABEL_CONFLICTS,
    tables.LABEL_REVIEWS,
)
PRECEDENCE = {"review": 4, "expert": 3, "feedback": 2, "import": 1}
_TYPES = {
    "string": T.StringType(),
    "double": T.DoubleType(),
    "timestamp": T.TimestampType(),
    "array<string>": T.ArrayType(T.StringType()),
}
CANDIDATE_SCHEMA = T.StructType([T.StructField(name, _TYPES[kind]) for name, kind in CANDIDATE_FIELDS])


class LabelSource(Protocol):
    """One origin of labels. `read` returns candidates in CANDIDATE_SCHEMA, or None when it has nothing."""

    name: str

    def read(self, spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame | None: ...


# -- sources ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportTableSource:
    """The initial import: the spec's `labels.import_table` (the synthetic ground truth in the demo), a table of
    the layout `IMPORT_LAYOUT`."""

    name: str = "import"

    def read(self, spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame | None:
        table = spec.labels.import_table
        if table is None or not lakehouse.exists(table):
            return None
        ref = f"{lakehouse.name(table)}@v{lakehouse.version(table)}"
        df = lakehouse.read(spark, table)
        check_import_layout({f.name: f.dataType.simpleString() for f in df.schema.fields}, ref, spec)
        return df.select(
            F.col(ITEM_KEY).cast("string"),
            F.col("label_data").cast("string"),
            F.col("confidence").cast("double"),
            F.lit("import").alias("source"),
            F.lit(ref).alias("source_ref"),
            F.col("labeled_by").cast("string"),
            F.col("allowed_uses"),
            F.col("prohibited_uses"),
            F.col("labeled_at").alias("created_at"),
            F.lit(None).cast("string").alias("error"),
        )


@dataclass(frozen=True)
class ColumnSource:
    """Labels that come with the data: the spec's `labels.column`, a column of the primary source table (the
    target column of a CSV, say). Each non-null value is one import label of its row's item."""

    name: str = "import"

    def read(self, spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame | None:
        column = spec.labels.column
        source = spec.sheet.sources[spec.sheet.primary]
        if column is None or not lakehouse.exists(source.table):
            return None
        ref = f"{lakehouse.name(source.table)}@v{lakehouse.version(source.table)}.{column.column}"
        key = spec.sheet.column(ITEM_KEY).ref.column
        value = F.col(column.column)
        if spec.template.response_kind == "number":
            value = value.cast("double")
        elif spec.template.response_kind in ("enum", "text"):
            value = value.cast("string")
        as_json = F.regexp_extract(F.to_json(F.array(value)), r"^\[(.*)\]$", 1)  # the JSON of one scalar
        return (
            lakehouse.read(spark, source.table)
            .filter(F.col(column.column).isNotNull())
            .select(
                F.col(key).cast("string").alias(ITEM_KEY),
                as_json.alias("label_data"),
                F.lit(None).cast("double").alias("confidence"),
                F.lit("import").alias("source"),
                F.lit(ref).alias("source_ref"),
                F.lit(f"column:{column}").alias("labeled_by"),
                F.lit(None).cast("array<string>").alias("allowed_uses"),
                F.lit(None).cast("array<string>").alias("prohibited_uses"),
                F.lit(None).cast("timestamp").alias("created_at"),  # set when appended; import tables rank first
                F.lit(None).cast("string").alias("error"),
            )
        )


@dataclass(frozen=True)
class InboxSource:
    """Label files (CSV or JSONL) people drop in `<files>/inbox/<use case>/` or import with `ontos labels import`.

    These are human-scale files, parsed on the driver with exact line numbers for error messages; bulk loads
    belong in an import table (`labels.import_table`), which Spark reads distributed.
    """

    name: str = "expert"

    def read(self, spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame | None:
        files = sorted(p for p in inbox_dir(lakehouse, spec.name).iterdir() if p.suffix in INBOX_SUFFIXES)
        rows = [r for path in files for r in parse_label_file(path, spec.template.response_kind)]
        return spark.createDataFrame(rows, CANDIDATE_SCHEMA) if rows else None


@dataclass(frozen=True)
class ReviewSource:
    """Labels people chose with `ontos review`: they become canonical labels of source `review`.

    Every edit counts, and so does an approved model proposal (an approval carrying the proposed value) unless a
    later edit of the same item replaced it (as in the training sheet, where the latest decision applies)."""

    name: str = "review"

    def read(self, spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame | None:
        if not lakehouse.exists(REVIEWS):
            return None
        reviews = lakehouse.read(spark, REVIEWS).filter(
            (F.col("training_sheet_id") == spec.training_sheet_id) & (F.col("label_type") == spec.labels.label_type)
        )
        last_edit = F.max(F.when(F.col("decision") == "edit", F.col("created_at"))).over(Window.partitionBy(ITEM_KEY))
        approved = (F.col("decision") == "approve") & F.col("label_data").isNotNull()
        current = F.col("_last_edit").isNull() | (F.col("created_at") > F.col("_last_edit"))
        edits = reviews.withColumn("_last_edit", last_edit).filter((F.col("decision") == "edit") | (approved & current))
        return edits.select(
            ITEM_KEY,
            F.col("label_data"),
            F.lit(1.0).alias("confidence"),
            F.lit("review").alias("source"),
            F.col("review_id").alias("source_ref"),
            F.col("reviewer").alias("labeled_by"),
            F.lit(None).cast("array<string>").alias("allowed_uses"),
            F.lit(None).cast("array<string>").alias("prohibited_uses"),
            F.col("created_at"),
            F.lit(None).cast("string").alias("error"),
        )


DEFAULT_SOURCES: tuple[LabelSource, ...] = (ImportTableSource(), ColumnSource(), InboxSource(), ReviewSource())


# -- validation -------------------------------------------------------------------------------------------------
def validation_udf(schema: Mapping[str, object]):
    """A pandas UDF: JSON label text -> struct(reason, canonical): reason is None when the label validates
    against `schema`; canonical is the label re-serialized compactly with sorted keys (so equal labels compare
    equal whatever their source's formatting)."""
    schema = dict(schema)

    def check(values: pd.Series) -> pd.DataFrame:
        validator = response_validator(schema)
        out = [validate_label(validator, text) for text in values]
        return pd.DataFrame(out, columns=["reason", "canonical"])

    return F.pandas_udf(check, "reason string, canonical string")


# -- usage governance -------------------------------------------------------------------------------------------
def item_usage(sheet_df: DataFrame, spec: UseCaseSpec, snapshot: SheetSnapshot) -> DataFrame:
    """item_ref -> uses the sheet itself prohibits: training, where a column is tagged phi and consent is absent."""
    phi = [c["name"] for c in snapshot.columns if "phi" in c.get("tags", [])]
    consent = spec.sheet.consent_column
    if not phi:
        blocked = F.lit(False)
    elif consent:
        blocked = ~F.coalesce(F.col(consent), F.lit(False))
    else:
        blocked = F.lit(True)
    return sheet_df.select(
        ITEM_KEY,
        F.when(blocked, F.array(F.lit("training")))
        .otherwise(F.array().cast("array<string>"))
        .alias("sheet_prohibited"),
    )


def prohibited_for_training(
    qa: DataFrame, sheet_df: DataFrame, spec: UseCaseSpec, snapshot: SheetSnapshot
) -> DataFrame:
    """item_ref of the items prohibited for training by their rows' own constraints or by the current sheet (PHI
    without consent now): a check compares the rows against the sheet, not against themselves."""
    own = qa.filter(F.array_contains("prohibited_uses", "training")).select(ITEM_KEY)
    usage = item_usage(sheet_df, spec, snapshot)
    by_sheet = usage.filter(F.array_contains("sheet_prohibited", "training")).select(ITEM_KEY)
    return own.unionByName(by_sheet).distinct()


def apply_usage(df: DataFrame) -> DataFrame:
    """allowed = (declared or all uses) minus prohibited; prohibited = declared plus the sheet's prohibitions."""
    prohibited = F.array_sort(
        F.array_distinct(
            F.concat(
                F.coalesce(F.col("prohibited_uses"), F.array().cast("array<string>")),
                F.coalesce(F.col("sheet_prohibited"), F.array().cast("array<string>")),
            )
        )
    )
    allowed = F.coalesce(F.col("allowed_uses"), F.array(*[F.lit(u) for u in USES]))
    return (
        df.withColumn("prohibited_uses", prohibited)
        .withColumn("allowed_uses", F.array_sort(F.array_except(allowed, F.col("prohibited_uses"))))
        .drop("sheet_prohibited")
    )


# -- merge ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelsResult:
    items: int
    labelled: int
    appended: int
    rejects: int
    conflicts: int
    table_version: int | None
    by_source: dict[str, int] = field(default_factory=dict)
    distribution: dict[str, object] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        return self.labelled / self.items if self.items else 0.0


def merge_labels(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    snapshot: SheetSnapshot,
    sources: Sequence[LabelSource] = DEFAULT_SOURCES,
) -> LabelsResult:
    """Merge every source into canonical labels, append what changed, record rejects and conflicts."""
    sheet_id, label_type = snapshot.sheet_id, spec.labels.label_type
    sheet_df = lakehouse.read(spark, snapshot.table)
    frames = [
        f.select(*CANDIDATE_SCHEMA.fieldNames()) for s in sources if (f := s.read(spark, lakehouse, spec)) is not None
    ]
    if not frames:
        frames = [spark.createDataFrame([], CANDIDATE_SCHEMA)]
    candidates = frames[0]
    for frame in frames[1:]:
        candidates = candidates.unionByName(frame)

    known = sheet_df.select(ITEM_KEY, F.lit(True).alias("_known"))
    checked = (
        candidates.join(known, ITEM_KEY, "left")
        .withColumn("_v", validation_udf(spec.template.response_schema)(F.col("label_data")))
        .withColumn(
            "reason",
            F.coalesce(
                F.col("error"),
                F.when(
                    F.col("_known").isNull(),
                    F.lit(f"unknown item_ref: not in sheet {sheet_id} version {snapshot.version}"),
                ),
                F.col("_v.reason"),
            ),
        )
        .withColumn("label_data", F.coalesce(F.col("_v.canonical"), F.col("label_data")))
        .drop("_known", "error", "_v")
        .cache()
    )
    try:
        valid = apply_usage(
            checked.filter(F.col("reason").isNull())
            .drop("reason")
            .join(item_usage(sheet_df, spec, snapshot), ITEM_KEY, "left")
        )
        valid = valid.withColumn(
            "label_id",
            F.substring(
                F.sha2(
                    F.concat_ws(
                        "|",
                        F.lit(sheet_id),
                        F.col(ITEM_KEY),
                        F.lit(label_type),
                        F.col("source"),
                        F.col("source_ref"),
                        F.col("label_data"),
                    ),
                    256,
                ),
                1,
                24,
            ),
        ).withColumn("precedence", _precedence())
        # one merge at a time (two runs of a partition would both read "no current label" and both append);
        # the labels first: conflicts and rejects are derived, replaced or upserted by id, so a run killed between
        # the three commits leaves labels whose reports the next run completes, never duplicates
        with lakehouse.locked(LABELS):
            appended, version = _append_winners(spark, lakehouse, valid, sheet_id, label_type)
            conflicts = _record_conflicts(spark, lakehouse, valid, sheet_id, label_type)
            rejects = _record_rejects(
                spark, lakehouse, checked.filter(F.col("reason").isNotNull()), sheet_id, label_type
            )
    finally:
        checked.unpersist()

    current = current_labels(spark, lakehouse, sheet_id, label_type).cache()  # three small aggregates below
    try:
        items, labelled = label_coverage(sheet_df, current)
        by_source = {r["source"]: r["count"] for r in current.groupBy("source").count().collect()}
        distribution = label_distribution(current, spec)
    finally:
        current.unpersist()
    return LabelsResult(items, labelled, appended, rejects, conflicts, version, by_source, distribution)


def label_coverage(items: DataFrame, current: DataFrame) -> tuple[int, int]:
    """(items, items with a current label) of a sheet, in one Spark job."""
    counts = (
        items.select(ITEM_KEY)
        .join(current.select(ITEM_KEY, F.lit(1).alias("_labelled")), ITEM_KEY, "left")
        .agg(F.count(F.lit(1)).alias("items"), F.count("_labelled").alias("labelled"))
        .first()
    )
    return int(counts["items"]), int(counts["labelled"])


def _precedence():
    expr = F.lit(0)
    for name, rank in PRECEDENCE.items():
        expr = F.when(F.col("source") == name, F.lit(rank)).otherwise(expr)
    return expr


def _record_rejects(spark, lakehouse: Lakehouse, rejected: DataFrame, sheet_id: str, label_type: str) -> int:
    rows = rejected.select(
        F.substring(
            F.sha2(
                F.concat_ws(
                    "|",
                    F.lit(sheet_id),
                    F.col("source"),
                    F.col("source_ref"),
                    F.coalesce(F.col(ITEM_KEY), F.lit("")),
                    F.coalesce(F.col("label_data"), F.lit("")),
                ),
                256,
            ),
            1,
            24,
        ).alias("reject_id"),
        F.lit(sheet_id).alias("sheet_id"),
        F.col(ITEM_KEY),
        F.lit(label_type).alias("label_type"),
        "source",
        "source_ref",
        F.col("label_data").alias("payload"),
        "reason",
        F.coalesce(F.col("created_at"), F.current_timestamp()).alias("created_at"),
    )
    found = python_rows(rows.toArrow())  # the rejected candidates: a record table, written without Spark
    if found:
        lakehouse.upsert_records(REJECTS, found, keys=["reject_id"])
    return len(found)


def _record_conflicts(spark, lakehouse: Lakehouse, valid: DataFrame, sheet_id: str, label_type: str) -> int:
    """Keys whose top-precedence candidates disagree: replace this label type's open conflicts."""
    top = valid.withColumn("_top", F.max("precedence").over(Window.partitionBy(ITEM_KEY))).filter(
        F.col("precedence") == F.col("_top")
    )
    conflicts = (
        top.groupBy(ITEM_KEY)
        .agg(
            F.array_sort(F.collect_set("label_id")).alias("label_ids"),
            F.array_sort(F.collect_set("label_data")).alias("values"),
            F.max("created_at").alias("detected_at"),
        )
        .filter(F.size("values") > 1)
        .select(
            F.lit(sheet_id).alias("sheet_id"),
            ITEM_KEY,
            F.lit(label_type).alias("label_type"),
            "label_ids",
            F.to_json("values").alias("label_values"),
            F.lit("open").alias("status"),
            "detected_at",
        )
    )
    found = python_rows(conflicts.toArrow())  # a record table: a few disputed items, written without Spark
    lakehouse.replace_records(CONFLICTS, found, where={"sheet_id": sheet_id, "label_type": label_type})
    return len(found)


def _append_winners(
    spark, lakehouse: Lakehouse, valid: DataFrame, sheet_id: str, label_type: str
) -> tuple[int, int | None]:
    """Append the winning label of each key as a new version when it differs from the current one."""
    order = Window.partitionBy(ITEM_KEY).orderBy(
        F.col("precedence").desc(),
        F.col("created_at").desc(),
        F.col("confidence").desc_nulls_last(),
        F.col("label_data"),
    )
    winners = valid.withColumn("_rank", F.row_number().over(order)).filter(F.col("_rank") == 1)
    lakehouse.ensure(LABELS)
    current = current_labels(spark, lakehouse, sheet_id, label_type, with_conflicts=False).select(
        ITEM_KEY,
        *[F.col(c).alias(f"cur_{c}") for c in ("version", "label_data", "source", "allowed_uses", "prohibited_uses")],
    )
    same = F.lit(True)
    for c in ("label_data", "source", "allowed_uses", "prohibited_uses"):
        same = same & F.col(c).eqNullSafe(F.col(f"cur_{c}"))
    changed = winners.join(current, ITEM_KEY, "left").filter(F.col("cur_version").isNull() | ~same)
    rows = changed.select(
        "label_id",
        F.lit(sheet_id).alias("sheet_id"),
        ITEM_KEY,
        F.lit(label_type).alias("label_type"),
        "label_data",
        "confidence",
        "source",
        "source_ref",
        "labeled_by",
        (F.coalesce(F.col("cur_version"), F.lit(0)) + 1).cast("long").alias("version"),
        "allowed_uses",
        "prohibited_uses",
        F.coalesce(F.col("created_at"), F.current_timestamp()).alias("created_at"),
    )
    version, count = lakehouse.append(LABELS, rows)
    return count, version


def current_labels(
    spark: SparkSession, lakehouse: Lakehouse, sheet_id: str, label_type: str, with_conflicts: bool = True
) -> DataFrame:
    """The latest version of each label of (sheet_id, label_type); `conflict` flags open conflicts."""
    history = lakehouse.read(spark, LABELS).filter(
        (F.col("sheet_id") == sheet_id) & (F.col("label_type") == label_type)
    )
    latest = (
        history.withColumn("_rank", F.row_number().over(Window.partitionBy(ITEM_KEY).orderBy(F.col("version").desc())))
        .filter(F.col("_rank") == 1)
        .drop("_rank")
    )
    if not with_conflicts:
        return latest
    open_conflicts = (
        lakehouse.read(spark, CONFLICTS)
        .filter((F.col("sheet_id") == sheet_id) & (F.col("label_type") == label_type) & (F.col("status") == "open"))
        .select(ITEM_KEY, F.lit(True).alias("conflict"))
    )
    return latest.join(open_conflicts, ITEM_KEY, "left").withColumn("conflict", F.coalesce("conflict", F.lit(False)))


def label_distribution(current: DataFrame, spec: UseCaseSpec, top: int = 12) -> dict[str, object]:
    """Class counts (enum), summary statistics (number), field fill rates (object) or top answers (text)."""
    kind = spec.template.response_kind
    if kind == "number":
        value = F.get_json_object("label_data", "$").cast("double")
        row = current.agg(
            F.count(value).alias("count"),
            F.min(value).alias("min"),
            F.mean(value).alias("mean"),
            F.percentile_approx(value, 0.5).alias("median"),
            F.max(value).alias("max"),
        ).first()
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.asDict().items()}
    if kind == "object":
        fields = list(spec.template.response_schema.get("properties", {}))
        row = current.agg(*[F.count(F.get_json_object("label_data", f"$.{f}")).alias(f) for f in fields]).first()
        return {f"{f} filled": row[f] for f in fields}
    value = F.get_json_object("label_data", "$")
    counts = current.groupBy(value.alias("value")).count().orderBy(F.col("count").desc()).limit(top).collect()
    return {r["value"]: r["count"] for r in counts}
