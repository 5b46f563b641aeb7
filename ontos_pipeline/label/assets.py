"""LABEL assets: canonical labels and their checks."""

from __future__ import annotations

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
)
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import published_sheet
from ontos_pipeline.label import labels as label_stage
from ontos_pipeline.label.feedback import FeedbackSource
from ontos_pipeline.metadata import check_result, count_with_examples, md_counts
from ontos_pipeline.platform.checks import CheckOutcome
from ontos_pipeline.resources.base import LakehouseResource, SparkResource, UseCasesResource
from ontos_pipeline.specs import ITEM_KEY
from ontos_pipeline.steps import Check, Step, step_inputs


def canonical_labels(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    result = label_stage.merge_labels(
        session, lh, spec, published_sheet(lh, spec), (*label_stage.DEFAULT_SOURCES, FeedbackSource())
    )
    context.log.info(
        f"{spec.name}: {result.labelled}/{result.items} items labelled, {result.appended} new "
        f"label versions, {result.rejects} rejects, {result.conflicts} open conflicts"
    )
    return MaterializeResult(
        data_version=DataVersion(f"{spec.labels.label_type}@v{result.table_version}"),
        metadata={
            "coverage": round(result.coverage, 4),
            "labelled_items": result.labelled,
            "items": result.items,
            "new_label_versions": result.appended,
            "rejects": result.rejects,
            "conflicts": result.conflicts,
            "by_source": MetadataValue.json(result.by_source),
            "distribution": md_counts(result.distribution),
            "labels_table_version": result.table_version,
        },
    )


def _labels(context, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource):
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    snapshot = published_sheet(lh, spec)
    return (
        spec,
        session,
        lh,
        snapshot,
        label_stage.current_labels(session, lh, snapshot.sheet_id, spec.labels.label_type),
    )


def labels_valid(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, _, _, _, current = _labels(context, spark, lakehouse, use_cases)
    checked = current.withColumn("_v", label_stage.validation_udf(spec.template.response_schema)("label_data"))
    bad = checked.filter(F.col("_v.reason").isNotNull())
    n, examples = count_with_examples(bad, F.concat_ws(": ", ITEM_KEY, "_v.reason"))
    return check_result(
        CheckOutcome(
            n == 0,
            "all current labels validate"
            if n == 0
            else f"{n} current labels do not validate, e.g. {'; '.join(examples)}",
            {"invalid": n},
        )
    )


def label_coverage(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, session, lh, snapshot, current = _labels(context, spark, lakehouse, use_cases)
    total, labelled = label_stage.label_coverage(lh.read(session, snapshot.table), current)
    coverage = labelled / total if total else 0.0
    ok = coverage >= spec.labels.min_coverage
    return check_result(
        CheckOutcome(
            ok,
            f"{labelled}/{total} items labelled ({coverage:.1%}); the spec asks for at "
            f"least {spec.labels.min_coverage:.0%}"
            + ("" if ok else ": label more items (ontos labels import, review)"),
            {"coverage": round(coverage, 4), "minimum": spec.labels.min_coverage},
        )
    )


def no_open_conflicts(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, _, _, _, current = _labels(context, spark, lakehouse, use_cases)
    n, examples = count_with_examples(current.filter("conflict"), F.col(ITEM_KEY))
    text = (
        "no conflicting labels"
        if n == 0
        else f"{n} items have conflicting labels (e.g. {', '.join(examples)}); they are flagged in the training "
        f"sheet: decide with `ontos review edit {spec.name} ITEM --label ...` or `ontos review approve`"
    )
    return AssetCheckResult(
        passed=n == 0,
        severity=AssetCheckSeverity.WARN,
        description=text,
        metadata={"conflicts": n, "examples": MetadataValue.json(examples)},
    )


CANONICAL_LABELS = Step(
    "canonical_labels",
    canonical_labels,
    group="label",
    deps=("sheet", "feedback"),
    kinds=frozenset({"spark", "delta"}),
    description="Every label source merged per (sheet_id, item_ref, label_type): import table, inbox files, review "
    "edits, feedback (corrections; thumbs-up confirmations where the spec allows). Invalid labels go to "
    "label_rejects, disagreements to label_conflicts; usage constraints inherit the sheet's PHI tags. "
    "History is appended, never overwritten.",
    checks=(
        Check(
            "labels_valid",
            "every current canonical label validates against the template's response schema",
            labels_valid,
        ),
        Check(
            "label_coverage",
            "share of sheet items with a canonical label is at least labels.min_coverage",
            label_coverage,
        ),
        Check(
            "no_open_conflicts",
            "keys whose top-precedence labels disagree; they stay flagged until a review decides",
            no_open_conflicts,
            blocking=False,
        ),
    ),
)
