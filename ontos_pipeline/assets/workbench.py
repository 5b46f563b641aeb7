"""Assets of the `generate`, `label` and `train` (export) groups: template, canonical labels, training sheet and
fine-tuning export, with their checks. Thin wrappers over `ontos_pipeline.stages`."""

import json
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
    asset_check,
)
from pyspark.sql import functions as F

from ontos_pipeline.assets.metadata import check_result
from ontos_pipeline.lakehouse import Lakehouse
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec
from ontos_pipeline.stages import export as export_stage
from ontos_pipeline.stages import labels as label_stage
from ontos_pipeline.stages.quality import CheckOutcome
from ontos_pipeline.stages.sheet import SheetSnapshot, current_sheet
from ontos_pipeline.stages.template import compile_template, current_template, register_template
from ontos_pipeline.stages.training_sheet import build_training_sheet, current_training_sheet, training_sheet_version


def published_sheet(spark, lakehouse: Lakehouse, spec: UseCaseSpec) -> SheetSnapshot:
    snapshot = current_sheet(spark, lakehouse, spec.name)
    if snapshot is None:
        raise RuntimeError(f"no published sheet for {spec.name}; materialize the sheet asset first")
    return snapshot


def export_directory(lakehouse: Lakehouse, spec: UseCaseSpec, version: str) -> Path:
    return Path(lakehouse.volume_path("exports", spec.name)) / version


def _md_counts(counts: dict) -> MetadataValue:
    return MetadataValue.md("| value | count |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in counts.items()))


def build_workbench_assets(partitions: PartitionsDefinition) -> list:
    sheet_asset = "sheet"
    @asset(name="template", group_name="generate", partitions_def=partitions, deps=[sheet_asset], kinds={"python"},
           description="The use case's Jinja2 prompt template, compiled in the sandbox against the sheet's columns "
                       "and registered by content version in `templates`.")
    def template(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                 use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        snapshot = published_sheet(session, lh, spec)
        compiled = compile_template(spec, [c["name"] for c in snapshot.columns])
        created = register_template(session, lh, compiled, run_id=context.run_id)
        return MaterializeResult(data_version=DataVersion(compiled.version), metadata={
            "version": compiled.version, "new_version": created, "label_type": compiled.label_type,
            "response_kind": spec.template.response_kind,
            "variables": MetadataValue.json(compiled.variables),
            "response_schema": MetadataValue.json(compiled.response_schema),
            "prompt": MetadataValue.md(f"```jinja\n{compiled.prompt}\n```"),
        })

    @asset(name="canonical_labels", group_name="label", partitions_def=partitions, deps=[sheet_asset],
           kinds={"spark", "delta"},
           description="Every label source merged per (sheet_id, item_ref, label_type): import table, inbox files, "
                       "review edits. Invalid labels go to label_rejects, disagreements to label_conflicts; usage "
                       "constraints inherit the sheet's PHI tags. History is appended, never overwritten.")
    def canonical_labels(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                         use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        result = label_stage.merge_labels(session, lh, spec, published_sheet(session, lh, spec))
        context.log.info(f"{spec.name}: {result.labelled}/{result.items} items labelled, {result.appended} new "
                         f"label versions, {result.rejects} rejects, {result.conflicts} open conflicts")
        return MaterializeResult(
            data_version=DataVersion(f"{spec.labels.label_type}@v{result.table_version}"),
            metadata={"coverage": round(result.coverage, 4), "labelled_items": result.labelled,
                      "items": result.items, "new_label_versions": result.appended, "rejects": result.rejects,
                      "conflicts": result.conflicts, "by_source": MetadataValue.json(result.by_source),
                      "distribution": _md_counts(result.distribution),
                      "labels_table_version": result.table_version})

    def labels_of(context, spark, lakehouse, use_cases):
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        snapshot = published_sheet(session, lh, spec)
        return spec, session, lh, snapshot, label_stage.current_labels(session, lh, snapshot.sheet_id,
                                                                       spec.labels.label_type)

    @asset_check(asset=canonical_labels, name="labels_valid", blocking=True, partitions_def=partitions,
                 description="every current canonical label validates against the template's response schema")
    def labels_valid(context: AssetCheckExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                     use_cases: UseCasesResource) -> AssetCheckResult:
        spec, _, _, _, current = labels_of(context, spark, lakehouse, use_cases)
        checked = current.withColumn("_v", label_stage.validation_udf(spec.template.response_schema)("label_data"))
        bad = checked.filter(F.col("_v.reason").isNotNull())
        n = bad.count()
        examples = [f"{r[ITEM_KEY]}: {r['reason']}" for r in bad.select(ITEM_KEY, "_v.reason").limit(5).collect()]
        return check_result(CheckOutcome(n == 0, "all current labels validate" if n == 0 else
                                         f"{n} current labels do not validate, e.g. {'; '.join(examples)}",
                                         {"invalid": n}))

    @asset_check(asset=canonical_labels, name="label_coverage", blocking=True, partitions_def=partitions,
                 description="share of sheet items with a canonical label is at least labels.min_coverage")
    def label_coverage(context: AssetCheckExecutionContext, spark: SparkResource,
                       lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        spec, session, lh, snapshot, current = labels_of(context, spark, lakehouse, use_cases)
        items = lh.read(session, snapshot.table).select(ITEM_KEY)
        labelled = current.join(items, ITEM_KEY).count()
        total = items.count()
        coverage = labelled / total if total else 0.0
        ok = coverage >= spec.labels.min_coverage
        return check_result(CheckOutcome(ok, f"{labelled}/{total} items labelled ({coverage:.1%}); the spec asks "
                                             f"for at least {spec.labels.min_coverage:.0%}" + (
                                                 "" if ok else ": label more items (ontos labels import, review)"),
                                         {"coverage": round(coverage, 4), "minimum": spec.labels.min_coverage}))

    @asset_check(asset=canonical_labels, name="no_open_conflicts", blocking=False, partitions_def=partitions,
                 description="keys whose top-precedence labels disagree; they stay flagged until a review decides")
    def no_open_conflicts(context: AssetCheckExecutionContext, spark: SparkResource,
                          lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        spec, _, _, _, current = labels_of(context, spark, lakehouse, use_cases)
        conflicted = current.filter("conflict")
        n = conflicted.count()
        examples = [r[ITEM_KEY] for r in conflicted.select(ITEM_KEY).orderBy(ITEM_KEY).limit(5).collect()]
        text = ("no conflicting labels" if n == 0 else
                f"{n} items have conflicting labels (e.g. {', '.join(examples)}); they are flagged in the training "
                f"sheet: decide with `ontos review edit {spec.name} ITEM --label ...` or `ontos review approve`")
        return AssetCheckResult(passed=n == 0, severity=AssetCheckSeverity.WARN, description=text,
                                metadata={"conflicts": n, "examples": MetadataValue.json(examples)})

    @asset(name="training_sheet", group_name="generate", partitions_def=partitions,
           deps=[sheet_asset, template, canonical_labels], kinds={"spark", "delta"},
           description="Prompt/response pairs for every sheet item (table qa_pairs): messages rendered in Spark, "
                       "responses from canonical labels, review decisions applied, stable train/val/test split.")
    def training_sheet(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                       use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        compiled = current_template(session, lh, spec.name)
        if compiled is None:
            raise RuntimeError(f"no registered template for {spec.name}; materialize the template asset first")
        result = build_training_sheet(session, lh, spec, published_sheet(session, lh, spec), compiled)
        return MaterializeResult(data_version=DataVersion(result.version), metadata={
            "version": result.version, "training_sheet_id": result.training_sheet_id, "dagster/row_count": result.rows,
            "new_version": result.created, "by_status": MetadataValue.json(result.by_status),
            "by_split": MetadataValue.json(result.by_split), "by_source": MetadataValue.json(result.by_source)})

    @asset_check(asset=training_sheet, name="trainable_rows_allow_training", blocking=True, partitions_def=partitions,
                 description="no row that passes the quality gate has usage constraints prohibiting training")
    def trainable_rows_allow_training(context: AssetCheckExecutionContext, spark: SparkResource,
                                      lakehouse: LocalLakehouseResource,
                                      use_cases: UseCasesResource) -> AssetCheckResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        qa = current_training_sheet(session, lh, spec.training_sheet_id)
        trainable = export_stage.trainable(qa)
        leaked = trainable.filter(F.coalesce(F.array_contains("prohibited_uses", "training"), F.lit(False)))
        n, total = leaked.count(), trainable.count()
        held_back = qa.filter(F.array_contains("prohibited_uses", "training")).count()
        return check_result(CheckOutcome(n == 0, f"{total} trainable rows, none prohibited for training; "
                                                 f"{held_back} rows are held back by usage constraints" if n == 0 else
                                         f"{n} trainable rows are prohibited for training", {"trainable": total,
                                                                                              "held_back": held_back}))

    @asset(name="training_export", group_name="train", partitions_def=partitions, deps=[training_sheet],
           kinds={"spark", "json"},
           description="Fine-tuning JSONL per split (chat and instruction formats; images as content parts for "
                       "multimodal use cases) of the rows that pass the dual gate, with a manifest of checksums.")
    def training_export(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                        use_cases: UseCasesResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        version = training_sheet_version(session, lh, spec.training_sheet_id)
        if version is None:
            raise RuntimeError(f"no training sheet for {spec.name}; materialize training_sheet first")
        qa = current_training_sheet(session, lh, spec.training_sheet_id)
        images = [c.name for c in spec.sheet.columns_of("image")]
        if images:
            snapshot = published_sheet(session, lh, spec)
            paths = lh.read(session, snapshot.table).select(
                ITEM_KEY, F.filter(F.array(*[F.col(c) for c in images]), lambda p: p.isNotNull()).alias("image_paths"))
            qa = qa.join(paths, ITEM_KEY, "left")
        manifest = export_stage.export_training_data(session, qa, export_directory(lh, spec, version))
        return MaterializeResult(data_version=DataVersion(version), metadata={
            "directory": MetadataValue.path(manifest.directory), "training_sheet_version": version,
            "rows_per_split": MetadataValue.json(manifest.rows_per_split),
            "dagster/row_count": sum(manifest.rows_per_split.values()),
            "manifest": MetadataValue.json(json.loads(manifest.to_json()))})

    def exported(context, spark, lakehouse, use_cases):
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        version = training_sheet_version(session, lh, spec.training_sheet_id)
        directory = export_directory(lh, spec, version or "none")
        if not (directory / export_stage.MANIFEST).exists():
            raise RuntimeError(f"no export at {directory}; materialize training_export first")
        return spec, session, lh, directory

    @asset_check(asset=training_export, name="export_excludes_prohibited", blocking=True, partitions_def=partitions,
                 description="no exported item has a label or sheet constraint prohibiting training (PHI)")
    def export_excludes_prohibited(context: AssetCheckExecutionContext, spark: SparkResource,
                                   lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        spec, session, lh, directory = exported(context, spark, lakehouse, use_cases)
        index = session.read.json(str(directory / export_stage.INDEX))
        qa = current_training_sheet(session, lh, spec.training_sheet_id)
        prohibited = qa.filter(F.array_contains("prohibited_uses", "training")).select(ITEM_KEY)
        leaked = index.join(prohibited, ITEM_KEY) if "item_ref" in index.columns else index.limit(0)
        n = leaked.count()
        examples = [r[ITEM_KEY] for r in leaked.limit(5).collect()]
        return check_result(CheckOutcome(n == 0, f"none of the exported items is prohibited for training "
                                                 f"({prohibited.count()} prohibited items held back)" if n == 0 else
                                         f"{n} exported items are prohibited for training, e.g. {examples}",
                                         {"leaked": n}))

    @asset_check(asset=training_export, name="export_files_valid", blocking=True, partitions_def=partitions,
                 description="every line of every export file validates against its format")
    def export_files_valid(context: AssetCheckExecutionContext, spark: SparkResource,
                           lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        _, session, _, directory = exported(context, spark, lakehouse, use_cases)
        invalid = export_stage.validate_export(session, directory)
        bad = {k: v for k, v in invalid.items() if v}
        return check_result(CheckOutcome(not bad, f"{len(invalid)} files, every line valid" if not bad else
                                         f"invalid lines: {bad}", {"invalid_lines": invalid}))

    return [template, canonical_labels, labels_valid, label_coverage, no_open_conflicts, training_sheet,
            trainable_rows_allow_training, training_export, export_excludes_prohibited, export_files_valid]
