"""GENERATE assets: the prompt template and the training sheet (with its governance check and the champion's
proposals for unlabelled items)."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import published_sheet
from ontos_pipeline.generate.prelabel import champion_proposer
from ontos_pipeline.generate.template import compile_template, current_template, register_template
from ontos_pipeline.generate.training_sheet import build_training_sheet, current_training_sheet, trainable_condition
from ontos_pipeline.label.labels import prohibited_for_training
from ontos_pipeline.metadata import check_result
from ontos_pipeline.platform.checks import CheckOutcome
from ontos_pipeline.resources.base import LakehouseResource, ModelStoreResource, SparkResource, UseCasesResource
from ontos_pipeline.specs import ITEM_KEY
from ontos_pipeline.steps import Check, Step, step_inputs


def template(
    context: AssetExecutionContext, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> MaterializeResult:
    spec, lh = use_cases.get(context.partition_key), lakehouse.get()
    snapshot = published_sheet(lh, spec)
    compiled = compile_template(spec, [c["name"] for c in snapshot.columns])
    created = register_template(lh, compiled, run_id=context.run_id)
    return MaterializeResult(
        data_version=DataVersion(compiled.version),
        metadata={
            "version": compiled.version,
            "new_version": created,
            "label_type": compiled.label_type,
            "response_kind": spec.template.response_kind,
            "variables": MetadataValue.json(compiled.variables),
            "response_schema": MetadataValue.json(compiled.response_schema),
            "prompt": MetadataValue.md(f"```jinja\n{compiled.prompt}\n```"),
        },
    )


def training_sheet(
    context: AssetExecutionContext,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    compiled = current_template(lh, spec.name)
    if compiled is None:
        raise RuntimeError(f"no registered template for {spec.name}; materialize the template asset first")
    snapshot = published_sheet(lh, spec)
    proposer, proposed_by = champion_proposer(
        mlflow_store.get(), spec.name, [c["name"] for c in snapshot.columns], lh.volume_path()
    )
    if proposer is None:
        context.log.info(proposed_by)
    result = build_training_sheet(session, lh, spec, snapshot, compiled, proposer)
    return MaterializeResult(
        data_version=DataVersion(result.version),
        metadata={
            "version": result.version,
            "training_sheet_id": result.training_sheet_id,
            "dagster/row_count": result.rows,
            "new_version": result.created,
            "by_status": MetadataValue.json(result.by_status),
            "by_split": MetadataValue.json(result.by_split),
            "by_source": MetadataValue.json(result.by_source),
            "model_proposals": result.proposals,
            "proposed_by": proposed_by,
        },
    )


def trainable_rows_allow_training(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    qa = current_training_sheet(session, lh, spec.training_sheet_id)
    snapshot = published_sheet(lh, spec)
    blocked = prohibited_for_training(qa, lh.read(session, snapshot.table), spec, snapshot)
    qa = qa.join(blocked.withColumn("_blocked", F.lit(True)), ITEM_KEY, "left")
    prohibited = F.coalesce(F.col("_blocked"), F.lit(False))  # by the row or by the current sheet
    trainable = trainable_condition()
    counts = qa.agg(
        F.sum((trainable & prohibited).cast("long")).alias("leaked"),
        F.sum(trainable.cast("long")).alias("trainable"),
        F.sum(prohibited.cast("long")).alias("held_back"),
    ).first()  # one pass
    n, total, held_back = (int(counts[k] or 0) for k in ("leaked", "trainable", "held_back"))
    return check_result(
        CheckOutcome(
            n == 0,
            f"{total} trainable rows, none prohibited for training; {held_back} rows are held back by usage constraints"
            if n == 0
            else f"{n} trainable rows are prohibited for training",
            {"trainable": total, "held_back": held_back},
        )
    )


TEMPLATE = Step(
    "template",
    template,
    group="generate",
    deps=("sheet",),
    kinds=frozenset({"python"}),
    description="The use case's Jinja2 prompt template, compiled in the sandbox against the sheet's columns and "
    "registered by content version in `templates`.",
)

TRAINING_SHEET = Step(
    "training_sheet",
    training_sheet,
    group="generate",
    deps=("sheet", "template", "canonical_labels"),
    kinds=frozenset({"spark", "delta"}),
    description="Prompt/response pairs for every sheet item (table qa_pairs): messages rendered in Spark, responses "
    "from canonical labels, else the champion's proposal with its confidence (pending: never trained on until a "
    "person approves or edits it), review decisions applied, stable train/val/test split.",
    checks=(
        Check(
            "trainable_rows_allow_training",
            "no row that passes the quality gate has usage constraints prohibiting training",
            trainable_rows_allow_training,
        ),
    ),
)
