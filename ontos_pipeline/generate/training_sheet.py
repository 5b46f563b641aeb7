"""GENERATE stage: the training sheet, one prompt/response pair per sheet item (table `qa_pairs`).

Messages are rendered in Spark (`mapInPandas`: the sandboxed template is compiled once per partition). The
response comes from the item's canonical label (`auto_approved`, or `flagged` while its label is in conflict),
else from the champion model's proposal with its confidence (`pending`, source `model`: see `generate.prelabel`),
else it stays empty (`pending`). The latest review decision per item is applied on top, so decisions survive
re-materialization: an edit, or the approval of a proposal, sets the response the person chose (source `review`).
A proposal is never trainable by itself (the dual quality gate excludes source `model`). The split is a stable
hash of `item_ref`; usage constraints are the label's plus the current sheet's (PHI tags without consent), so a
consent revoked after the labels were merged holds back the item at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import SheetSnapshot, content_version
from ontos_pipeline.generate.qa_pairs import training_sheet_version
from ontos_pipeline.generate.template import CompiledTemplate
from ontos_pipeline.label.labels import REVIEWS, apply_usage, current_labels, item_usage
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

QA = tables.QA_PAIRS  # read without Spark in generate.qa_pairs
TRAINABLE_STATUSES = ("auto_approved", "approved", "edited")  # quality approved, by a person or the rules
TRAINING = "training"
DECISION_STATUS = {"approve": "approved", "edit": "edited", "reject": "rejected", "flag": "flagged"}
SPLIT_BUCKETS = 10_000

MODEL = "model"  # response_source of a proposal
# A proposer answers for unlabelled items (the champion model, once one is served: `generate.prelabel`):
# sheet rows (item_ref + columns) -> item_ref, response (JSON text), confidence (double).
Proposer = Callable[[DataFrame], DataFrame]


@dataclass(frozen=True)
class TrainingSheetResult:
    training_sheet_id: str
    version: str
    rows: int
    created: bool
    by_status: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    proposals: int = 0  # rows whose response is a model proposal (source `model`)


def render_messages(sheet_df: DataFrame, template: CompiledTemplate) -> DataFrame:
    """item_ref -> messages (JSON text), rendered on the executors; the template is compiled once per partition."""
    columns = sorted(set(template.variables.values()))
    integers = {
        f.name: "Int64"
        for f in sheet_df.schema
        if f.name in columns and f.dataType.typeName() in ("long", "integer", "short", "byte")
    }

    def render(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        renderer = template.renderer()
        for batch in batches:
            batch = batch.astype(integers)  # a null makes pandas hold integers as floats: 12 would render 12.0
            rows = batch.astype(object).where(batch.notna(), None).to_dict("records")
            yield pd.DataFrame(
                {
                    ITEM_KEY: batch[ITEM_KEY],
                    "messages": [json.dumps(renderer.messages(r), ensure_ascii=False) for r in rows],
                }
            )

    return sheet_df.select(ITEM_KEY, *[c for c in columns if c != ITEM_KEY]).mapInPandas(
        render, f"{ITEM_KEY} string, messages string"
    )


def split_column(spec: UseCaseSpec):
    """train / val / test from a stable hash of item_ref (the same item always lands in the same split)."""
    bucket = F.pmod(F.xxhash64(F.col(ITEM_KEY)), F.lit(SPLIT_BUCKETS))
    train = round(spec.training.split["train"] * SPLIT_BUCKETS)
    val = train + round(spec.training.split["val"] * SPLIT_BUCKETS)
    return F.when(bucket < train, "train").when(bucket < val, "val").otherwise("test")


def latest_reviews(spark: SparkSession, lakehouse: Lakehouse, training_sheet_id: str) -> DataFrame:
    reviews = lakehouse.read(spark, REVIEWS).filter(F.col("training_sheet_id") == training_sheet_id)
    order = Window.partitionBy(ITEM_KEY).orderBy(F.col("created_at").desc(), F.col("review_id").desc())
    return (
        reviews.withColumn("_rank", F.row_number().over(order))
        .filter(F.col("_rank") == 1)
        .select(ITEM_KEY, F.col("decision").alias("review_decision"), F.col("label_data").alias("review_label"))
    )


def assemble_training_sheet(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    snapshot: SheetSnapshot,
    template: CompiledTemplate,
    proposer: Proposer | None = None,
) -> DataFrame:
    """The qa rows of the training sheet (every column of `qa_pairs` but version and updated_at)."""
    sheet_df = lakehouse.read(spark, snapshot.table)
    labels = current_labels(spark, lakehouse, snapshot.sheet_id, spec.labels.label_type).select(
        ITEM_KEY,
        F.col("label_id").alias("canonical_label_id"),
        F.col("label_data").alias("label"),
        "conflict",
        F.col("allowed_uses").alias("label_allowed"),
        F.col("prohibited_uses").alias("label_prohibited"),
    )
    df = (
        render_messages(sheet_df, template)
        .join(labels, ITEM_KEY, "left")
        .join(latest_reviews(spark, lakehouse, spec.training_sheet_id), ITEM_KEY, "left")
        .join(item_usage(sheet_df, spec, snapshot), ITEM_KEY, "left")
    )
    if proposer is not None:  # only unlabelled items are scored
        unlabelled = sheet_df.join(labels.select(ITEM_KEY), ITEM_KEY, "left_anti")
        proposals = proposer(unlabelled).select(
            ITEM_KEY, F.col("response").alias("proposal"), F.col("confidence").alias("proposal_confidence")
        )
        df = df.join(proposals, ITEM_KEY, "left")
    else:
        df = df.withColumn("proposal", F.lit(None).cast("string")).withColumn(
            "proposal_confidence", F.lit(None).cast("double")
        )

    labelled = F.col("label").isNotNull()
    base_status = F.when(labelled & F.col("conflict"), "flagged").when(labelled, "auto_approved").otherwise("pending")
    base_source = F.when(labelled, "canonical_label").when(F.col("proposal").isNotNull(), MODEL)
    decision = F.col("review_decision")
    # an edit's label, or the proposal a person approved (`generate.review` records it with the approval)
    chosen = (decision == "edit") | ((decision == "approve") & F.col("review_label").isNotNull())
    status = base_status
    for name, reviewed in DECISION_STATUS.items():
        status = F.when(decision == name, F.lit(reviewed)).otherwise(status)
    source = F.when(chosen, F.lit("review")).otherwise(base_source)
    df = (
        df.withColumn("status", status)
        .withColumn(
            "response",
            F.when(chosen, F.col("review_label")).otherwise(F.coalesce(F.col("label"), F.col("proposal"))),
        )
        .withColumn("response_source", source)
        .withColumn("confidence", F.when(source == MODEL, F.col("proposal_confidence")))
        .withColumn("allowed_uses", F.col("label_allowed"))
        .withColumn("prohibited_uses", F.col("label_prohibited"))
    )
    df = apply_usage(df)  # the current sheet's prohibitions on every row: consent revoked since the labels counts
    return df.select(
        F.lit(spec.training_sheet_id).alias("training_sheet_id"),
        ITEM_KEY,
        "messages",
        "response",
        "status",
        "response_source",
        "confidence",
        "canonical_label_id",
        split_column(spec).alias("split"),
        "allowed_uses",
        "prohibited_uses",
        F.lit(snapshot.version).alias("sheet_version"),
        F.lit(template.version).alias("template_version"),
    )


def build_training_sheet(
    spark: SparkSession,
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    snapshot: SheetSnapshot,
    template: CompiledTemplate,
    proposer: Proposer | None = None,
) -> TrainingSheetResult:
    """Assemble, version by content and replace this training sheet's rows in `qa_pairs` (once per version)."""
    rows = assemble_training_sheet(spark, lakehouse, spec, snapshot, template, proposer).cache()
    try:
        version = content_version(rows)
        current = training_sheet_version(lakehouse, spec.training_sheet_id)
        created = current != version
        if created:
            out = rows.withColumn("version", F.lit(version)).withColumn(
                "updated_at", F.lit(datetime.now(UTC)).cast("timestamp")
            )
            lakehouse.ensure(QA)
            lakehouse.replace(spark, QA, out, where={"training_sheet_id": spec.training_sheet_id})
    finally:
        rows.unpersist()
    stored = current_training_sheet(spark, lakehouse, spec.training_sheet_id)
    counts = (
        stored.groupBy("status", "split", F.coalesce("response_source", F.lit("none")).alias("source"))
        .count()
        .collect()
    )

    def total(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in counts:
            out[r[key]] = out.get(r[key], 0) + r["count"]
        return dict(sorted(out.items()))

    by_source = total("source")
    return TrainingSheetResult(
        spec.training_sheet_id,
        version,
        sum(r["count"] for r in counts),
        created,
        total("status"),
        total("split"),
        by_source,
        by_source.get(MODEL, 0),
    )


def current_training_sheet(spark: SparkSession, lakehouse: Lakehouse, training_sheet_id: str) -> DataFrame:
    return lakehouse.read(spark, QA).filter(F.col("training_sheet_id") == training_sheet_id)


# -- the dual quality gate --------------------------------------------------------------------------------------
def usable_condition(use: str):
    """Quality approved and usage constraints allowing `use` (training, evaluation, serving), as a Column. A model
    proposal (source `model`) never passes, whatever its status: only what a person or a label source chose does."""

    def mentions(column: str):
        return F.coalesce(F.array_contains(F.col(column), use), F.lit(False))

    return (
        F.col("status").isin(*TRAINABLE_STATUSES)
        & F.col("response").isNotNull()
        & ~F.coalesce(F.col("response_source") == MODEL, F.lit(False))
        & ~mentions("prohibited_uses")
        & (F.col("allowed_uses").isNull() | mentions("allowed_uses"))
    )


def usable(qa: DataFrame, use: str) -> DataFrame:
    """Rows whose quality is approved and whose usage constraints allow `use` (training, evaluation, serving)."""
    return qa.filter(usable_condition(use))


def trainable_condition():
    """The dual quality gate for training (see DESIGN.md §3), as a Column."""
    return usable_condition(TRAINING)


def trainable(qa: DataFrame) -> DataFrame:
    """Rows that pass the dual quality gate for training."""
    return qa.filter(trainable_condition())


# -- rendering (runs on the executors) --------------------------------------------------------------------------
