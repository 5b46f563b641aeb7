"""Assets of the `generate` group: the prompt template and the training sheet (with its governance check)."""


from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)
from pyspark.sql import functions as F

from ontos_pipeline.assets.common import published_sheet
from ontos_pipeline.assets.metadata import check_result
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.stages import export as export_stage
from ontos_pipeline.stages.quality import CheckOutcome
from ontos_pipeline.stages.template import compile_template, current_template, register_template
from ontos_pipeline.stages.training_sheet import build_training_sheet, current_training_sheet
from ontos_pipeline.steps import Check, check_specs, step


def build_generate_assets(partitions: PartitionsDefinition) -> list:
    @asset(name="template", group_name="generate", partitions_def=partitions, deps=["sheet"], kinds={"python"},
           description="The use case's Jinja2 prompt template, compiled in the sandbox against the sheet's columns "
                       "and registered by content version in `templates`.")
    @step("template")
    def template(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                 use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        snapshot = published_sheet(session, lh, spec)
        compiled = compile_template(spec, [c["name"] for c in snapshot.columns])
        created = register_template(lh, compiled, run_id=context.run_id)
        return MaterializeResult(data_version=DataVersion(compiled.version), metadata={
            "version": compiled.version, "new_version": created, "label_type": compiled.label_type,
            "response_kind": spec.template.response_kind,
            "variables": MetadataValue.json(compiled.variables),
            "response_schema": MetadataValue.json(compiled.response_schema),
            "prompt": MetadataValue.md(f"```jinja\n{compiled.prompt}\n```"),
        })

    def trainable_rows_allow_training(context: AssetExecutionContext, spark: SparkResource,
                                      lakehouse: LocalLakehouseResource,
                                      use_cases: UseCasesResource) -> AssetCheckResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        qa = current_training_sheet(session, lh, spec.training_sheet_id)
        prohibited = F.coalesce(F.array_contains("prohibited_uses", "training"), F.lit(False))
        trainable = export_stage.trainable_condition()
        counts = qa.agg(F.sum((trainable & prohibited).cast("long")).alias("leaked"),
                        F.sum(trainable.cast("long")).alias("trainable"),
                        F.sum(prohibited.cast("long")).alias("held_back")).first()  # one pass
        n, total, held_back = (int(counts[k] or 0) for k in ("leaked", "trainable", "held_back"))
        return check_result(CheckOutcome(n == 0, f"{total} trainable rows, none prohibited for training; "
                                                 f"{held_back} rows are held back by usage constraints" if n == 0 else
                                         f"{n} trainable rows are prohibited for training", {"trainable": total,
                                                                                              "held_back": held_back}))

    training_sheet_checks = [
        Check("trainable_rows_allow_training",
              "no row that passes the quality gate has usage constraints prohibiting training",
              trainable_rows_allow_training),
    ]

    @asset(name="training_sheet", check_specs=check_specs("training_sheet", training_sheet_checks, partitions),
           group_name="generate", partitions_def=partitions,
           deps=["sheet", template, "canonical_labels"], kinds={"spark", "delta"},
           description="Prompt/response pairs for every sheet item (table qa_pairs): messages rendered in Spark, "
                       "responses from canonical labels, review decisions applied, stable train/val/test split.")
    @step("training_sheet", checks=training_sheet_checks)
    def training_sheet(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                       use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        compiled = current_template(lh, spec.name)
        if compiled is None:
            raise RuntimeError(f"no registered template for {spec.name}; materialize the template asset first")
        result = build_training_sheet(session, lh, spec, published_sheet(session, lh, spec), compiled)
        return MaterializeResult(data_version=DataVersion(result.version), metadata={
            "version": result.version, "training_sheet_id": result.training_sheet_id, "dagster/row_count": result.rows,
            "new_version": result.created, "by_status": MetadataValue.json(result.by_status),
            "by_split": MetadataValue.json(result.by_split), "by_source": MetadataValue.json(result.by_source)})

    return [template, training_sheet]
