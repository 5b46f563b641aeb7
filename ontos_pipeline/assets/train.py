"""Assets of the `train` group, part 1: the fine-tuning export and its checks."""

import json

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

from ontos_pipeline.assets.common import export_directory, published_sheet
from ontos_pipeline.assets.metadata import check_result, first_values
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.specs import ITEM_KEY
from ontos_pipeline.stages import export as export_stage
from ontos_pipeline.stages.qa_pairs import training_sheet_version
from ontos_pipeline.stages.quality import CheckOutcome
from ontos_pipeline.stages.training_data import export_rows
from ontos_pipeline.stages.training_sheet import current_training_sheet
from ontos_pipeline.steps import Check, check_specs, step


def build_export_assets(partitions: PartitionsDefinition) -> list:
    def exported(context, spark, lakehouse, use_cases):
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        version = training_sheet_version(lh, spec.training_sheet_id)
        directory = export_directory(lh, spec, version or "none")
        if not (directory / export_stage.MANIFEST).exists():
            raise RuntimeError(f"no export at {directory}; materialize training_export first")
        return spec, session, lh, directory

    def export_excludes_prohibited(context: AssetExecutionContext, spark: SparkResource,
                                   lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        spec, session, lh, directory = exported(context, spark, lakehouse, use_cases)
        index = session.read.json(str(directory / export_stage.INDEX))
        qa = current_training_sheet(session, lh, spec.training_sheet_id)
        prohibited = qa.filter(F.array_contains("prohibited_uses", "training")).select(ITEM_KEY)
        if "item_ref" in index.columns:
            marked = prohibited.select(ITEM_KEY, F.lit(True).alias("_prohibited")).join(
                index.select(ITEM_KEY, F.lit(True).alias("_exported")), ITEM_KEY, "full")
            leaked = F.col("_prohibited") & F.col("_exported")
            counts = marked.agg(F.count("_prohibited").alias("held"), F.sum(leaked.cast("long")).alias("leaked"),
                                first_values(F.when(leaked, F.col(ITEM_KEY))).alias("examples")).first()
            n, held, examples = int(counts["leaked"] or 0), int(counts["held"]), list(counts["examples"] or [])
        else:  # an export without item refs cannot leak a known item
            n, held, examples = 0, prohibited.count(), []
        return check_result(CheckOutcome(n == 0, f"none of the exported items is prohibited for training "
                                                 f"({held} prohibited items held back)" if n == 0 else
                                         f"{n} exported items are prohibited for training, e.g. {examples}",
                                         {"leaked": n}))

    def export_files_valid(context: AssetExecutionContext, spark: SparkResource,
                           lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        _, session, _, directory = exported(context, spark, lakehouse, use_cases)
        invalid = export_stage.validate_export(session, directory)
        bad = {k: v for k, v in invalid.items() if v}
        return check_result(CheckOutcome(not bad, f"{len(invalid)} files, every line valid" if not bad else
                                         f"invalid lines: {bad}", {"invalid_lines": invalid}))

    training_export_checks = [
        Check("export_excludes_prohibited",
              "no exported item has a label or sheet constraint prohibiting training (PHI)",
              export_excludes_prohibited),
        Check("export_files_valid", "every line of every export file validates against its format", export_files_valid),
    ]

    @asset(name="training_export", check_specs=check_specs("training_export", training_export_checks, partitions),
           group_name="train", partitions_def=partitions, deps=["training_sheet"],
           kinds={"spark", "json"},
           description="Fine-tuning JSONL per split (chat and instruction formats; images as content parts for "
                       "multimodal use cases) of the rows that pass the dual gate, with a manifest of checksums.")
    @step("training_export", checks=training_export_checks)
    def training_export(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                        use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        version = training_sheet_version(lh, spec.training_sheet_id)
        if version is None:
            raise RuntimeError(f"no training sheet for {spec.name}; materialize training_sheet first")
        qa = export_rows(session, lh, spec, current_training_sheet(session, lh, spec.training_sheet_id),
                         published_sheet(session, lh, spec).table)
        manifest = export_stage.export_training_data(session, qa, export_directory(lh, spec, version))
        return MaterializeResult(data_version=DataVersion(version), metadata={
            "directory": MetadataValue.path(manifest.directory), "training_sheet_version": version,
            "rows_per_split": MetadataValue.json(manifest.rows_per_split),
            "dagster/row_count": sum(manifest.rows_per_split.values()),
            "manifest": MetadataValue.json(json.loads(manifest.to_json()))})

    return [training_export]
