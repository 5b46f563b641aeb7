"""The rows a model learns from and is measured on, read from one training-sheet snapshot.

`export_rows` feeds the JSONL export (qa rows plus the image files, resolved on this machine), `model_rows` the
trainer and the evaluation (the usable qa rows next to the item columns the model reads). Both take the qa rows
explicitly, so the same functions rebuild the training data of an old model from the Delta version of `qa_pairs` it
was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ontos_pipeline.generate.training_sheet import usable
from ontos_pipeline.platform.images import image_file_column, with_image_files_spark
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec
from ontos_pipeline.train.trainer.local import RESPONSE

SPLIT = "split"


def export_rows(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, qa: DataFrame, sheet_table: str
) -> DataFrame:
    """`qa` with the item's image paths (column `image_paths`) when the use case has image columns."""
    images = [c.name for c in spec.sheet.columns_of("image")]
    if not images:
        return qa
    paths = sheet_items(spark, lakehouse, spec, sheet_table).select(
        ITEM_KEY,
        F.filter(F.array(*[F.col(image_file_column(c)) for c in images]), lambda p: p.isNotNull()).alias("image_paths"),
    )
    return qa.join(paths, ITEM_KEY, "left")


def model_rows(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, qa: DataFrame, sheet_table: str, use: str
) -> DataFrame:
    """Usable qa rows for `use` (training or evaluation) with split, response (JSON text) and every item column,
    plus each image column's file resolved on this machine (`with_image_files`; the cells stay relative)."""
    rows = usable(qa, use).select(ITEM_KEY, SPLIT, F.col("response").cast("string").alias(RESPONSE))
    return rows.join(sheet_items(spark, lakehouse, spec, sheet_table), ITEM_KEY)


def sheet_items(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, sheet_table: str) -> DataFrame:
    """The sheet's rows plus each image column's file resolved under the lakehouse files folder
    (`with_image_files`: readers open the resolved file, prompts keep the relative cell)."""
    images = [c.name for c in spec.sheet.columns_of("image")]
    return with_image_files_spark(lakehouse.read(spark, sheet_table), images, lakehouse.volume_path())


def split_frame(rows: DataFrame, split: str, max_rows: int) -> pd.DataFrame:
    """One split as pandas (the local learners are single-node), at most `max_rows` rows chosen by a stable hash.

    Responses are parsed from JSON; rows come sorted by item_ref so a rebuild yields the same frame.
    """
    part = rows.filter(F.col(SPLIT) == split)
    part = part.orderBy(F.xxhash64(ITEM_KEY)).limit(max_rows) if max_rows else part
    frame = part.orderBy(ITEM_KEY).toPandas()
    frame[RESPONSE] = [json.loads(v) for v in frame[RESPONSE]]
    return frame


def weight_items(frame: pd.DataFrame, items: set[str], times: int) -> pd.DataFrame:
    """`frame` with the rows of `items` repeated `times` times in all: a sample weight that every learner honours
    (the order stays deterministic, so a rebuild gives the same frame)."""
    if times <= 1 or not items:
        return frame
    extra = frame[frame[ITEM_KEY].isin(items)]
    return pd.concat([frame, *[extra] * (times - 1)], ignore_index=True)


def cross_split_leaks(qa: DataFrame) -> dict[str, int]:
    """Leak counts between the train split and the val/test splits: shared items and identical prompts."""
    train = qa.filter(F.col(SPLIT) == "train")
    held_out = qa.filter(F.col(SPLIT) != "train")
    shared_items = held_out.join(train.select(ITEM_KEY), ITEM_KEY, "left_semi").count()
    same_prompt = held_out.join(train.select("messages").distinct(), "messages", "left_semi").count()
    return {"items_in_two_splits": shared_items, "held_out_prompts_seen_in_train": same_prompt}


@dataclass(frozen=True)
class FeedbackItems:
    """Items whose current canonical label came from feedback: corrected (someone gave the right answer) or
    confirmed (a thumbs-up for the model's own answer)."""

    corrected: frozenset[str] = frozenset()
    confirmed: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        return self.corrected | self.confirmed


def feedback_items(spark, lakehouse: Lakehouse, spec: UseCaseSpec, sheet_id: str) -> FeedbackItems:
    """The feedback-labelled items of the sheet, split into corrections and thumbs-up confirmations (at most one
    item per feedback row, so bounded sets)."""
    from ontos_pipeline.label.feedback import FEEDBACK
    from ontos_pipeline.label.labels import LABELS, current_labels

    if not lakehouse.exists(LABELS):
        return FeedbackItems()
    labels = current_labels(spark, lakehouse, sheet_id, spec.labels.label_type, with_conflicts=False)
    fed = labels.filter(F.col("source") == "feedback").select(
        ITEM_KEY, F.regexp_extract("source_ref", r"^feedback:(.*)$", 1).alias("feedback_id")
    )
    if lakehouse.exists(FEEDBACK):
        corrections = lakehouse.read(spark, FEEDBACK).filter(F.col("correction").isNotNull()).select("feedback_id")
        fed = fed.join(corrections.withColumn("corrected", F.lit(True)), "feedback_id", "left")
    else:
        fed = fed.withColumn("corrected", F.lit(None).cast("boolean"))
    rows = fed.select(ITEM_KEY, F.coalesce("corrected", F.lit(False)).alias("corrected")).collect()
    return FeedbackItems(frozenset(r[0] for r in rows if r[1]), frozenset(r[0] for r in rows if not r[1]))


def cap_confirmations(frame: pd.DataFrame, confirmed: frozenset[str], max_share: float) -> pd.DataFrame:
    """`frame` with at most `max_share` of its rows from thumbs-up confirmations: a thumbs-up repeats the model's
    own answer, so a model trained mostly on them learns itself. The confirmations kept are chosen by a stable hash
    of the item (a rebuild gives the same frame); they are never repeated (`weight_items` weights corrections)."""
    is_confirmed = frame[ITEM_KEY].isin(confirmed)
    others = int((~is_confirmed).sum())
    allowed = int(max_share / (1 - max_share) * others) if max_share < 1 else len(frame)
    if int(is_confirmed.sum()) <= allowed:
        return frame
    ranked = frame[is_confirmed].assign(_h=lambda f: pd.util.hash_pandas_object(f[ITEM_KEY], index=False).to_numpy())
    keep = set(ranked.sort_values(["_h", ITEM_KEY])[ITEM_KEY].iloc[:allowed])
    return frame[~is_confirmed | frame[ITEM_KEY].isin(keep)].reset_index(drop=True)


def new_items(
    spark, lakehouse: Lakehouse, spec: UseCaseSpec, model_version: str, current_table: str, among: list[str]
) -> set[str]:
    """Those of `among` (item refs, e.g. a test split) that the sheet `model_version` was trained on did not hold:
    the data that arrived since that model was trained."""
    from ontos_pipeline.data.sheet import snapshot_table

    runs = lakehouse.records(
        "training_runs", {"use_case": spec.name, "model_version": str(model_version)}, columns=["sheet_version"]
    )
    if not runs or not among:
        return set()
    old = snapshot_table(spec, runs[0]["sheet_version"])
    if not lakehouse.exists(old) or lakehouse.name(old) == lakehouse.name(current_table):
        return set()
    candidates = spark.createDataFrame([(ref,) for ref in among], "item_ref string")
    fresh = candidates.join(lakehouse.read(spark, old).select("item_ref"), "item_ref", "left_anti")
    return {r[0] for r in fresh.collect()}  # at most len(among)
