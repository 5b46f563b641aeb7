"""Assets of the `synthetic` and `data` groups: source tables, the sheet snapshot and its checks."""


from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)
from pydantic import Field

from ontos_pipeline.assets.common import published_sheet
from ontos_pipeline.assets.metadata import check_result, column_schema, markdown_preview
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.stages import quality
from ontos_pipeline.stages.sheet import build_sheet
from ontos_pipeline.stages.sources import materialize_sources
from ontos_pipeline.steps import Check, check_specs, step


class SourcesConfig(Config):
    rows: int | None = Field(default=None, description="Items to generate (default: the spec's synthetic.rows)")
    seed: int | None = Field(default=None, description="Generator seed (default: the spec's synthetic.seed)")


def build_data_assets(partitions: PartitionsDefinition) -> list:
    @asset(name="sources", group_name="synthetic", partitions_def=partitions, kinds={"delta", "python"},
           description="Raw source tables of the use case: generated deterministically for the demo use cases "
                       "(sources, ground-truth labels, drifted batch), otherwise checked to exist.")
    @step("sources")
    def sources(context: AssetExecutionContext, config: SourcesConfig, lakehouse: LocalLakehouseResource,
                use_cases: UseCasesResource) -> MaterializeResult:
        spec = use_cases.get(context.partition_key)
        tables = materialize_sources(lakehouse.get(), spec, rows=config.rows, seed=config.seed)
        primary = next(t for t in tables if t.name.endswith(f".{spec.primary_table.split('.')[-1]}"))
        return MaterializeResult(metadata={
            "dagster/row_count": primary.rows,
            "tables": MetadataValue.md("| table | role | rows | version |\n|---|---|---|---|\n" + "\n".join(
                f"| {t.name} | {t.role} | {t.rows} | {t.version} |" for t in tables)),
            "generated": spec.synthetic is not None,
        })

    def snapshot(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                 use_cases: UseCasesResource):
        spec = use_cases.get(context.partition_key)
        session, lh = spark.session(), lakehouse.get()
        snap = published_sheet(session, lh, spec)
        return spec, snap, lh.read(session, snap.table)

    def frame_rules(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                    use_cases: UseCasesResource) -> AssetCheckResult:
        spec, snap, df = snapshot(context, spark, lakehouse, use_cases)
        return check_result(quality.check_frame_rules(df, spec), version=snap.version)

    def item_ref_unique(context: AssetExecutionContext, spark: SparkResource,
                        lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        _, snap, df = snapshot(context, spark, lakehouse, use_cases)
        return check_result(quality.check_unique_keys(df), version=snap.version)

    def images_present(context: AssetExecutionContext, spark: SparkResource,
                       lakehouse: LocalLakehouseResource, use_cases: UseCasesResource) -> AssetCheckResult:
        spec, snap, df = snapshot(context, spark, lakehouse, use_cases)
        return check_result(quality.check_images(df, spec), version=snap.version)

    def phi_scan(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                 use_cases: UseCasesResource) -> AssetCheckResult:
        spec, snap, _ = snapshot(context, spark, lakehouse, use_cases)
        return check_result(quality.check_phi_declared(snap.phi_findings, spec), version=snap.version)

    sheet_checks = [
        Check("frame_rules", "pandera: column types, nullability, numeric ranges and allowed values from the spec",
              frame_rules),
        Check("item_ref_unique", "item_ref is non-null and unique", item_ref_unique),
        Check("images_present", "every image column points at an existing file", images_present),
        Check("phi_scan", "PII/PHI scan of text columns (emails, phones, SSN-like ids, dates of birth); PHI is "
                          "allowed only in columns tagged phi, whose training use is then prohibited", phi_scan),
    ]

    @asset(name="sheet", group_name="data", partitions_def=partitions, deps=[sources], kinds={"spark", "delta"},
           check_specs=check_specs("sheet", sheet_checks, partitions),
           description="Validated snapshot of the use case's source tables: joined, typed, one row per item_ref, "
                       "versioned by content hash and registered in the `sheets` table.")
    @step("sheet", checks=sheet_checks)
    def sheet(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
              use_cases: UseCasesResource) -> MaterializeResult:
        spec = use_cases.get(context.partition_key)
        session, lh = spark.session(), lakehouse.get()
        snap = build_sheet(session, lh, spec, run_id=context.run_id)
        phi = [c["name"] for c in snap.columns if "phi" in c["tags"]]
        context.log.info(f"sheet {spec.name} version {snap.version}: {snap.row_count} rows in {snap.table}"
                         + ("" if snap.created else " (unchanged, snapshot reused)"))
        return MaterializeResult(
            data_version=DataVersion(snap.version),
            metadata={
                "dagster/row_count": snap.row_count,
                "dagster/column_schema": column_schema(snap.columns),
                "version": snap.version,
                "snapshot_table": snap.table,
                "phi_columns": ", ".join(phi) or "none",
                "preview": markdown_preview(lh.read(session, snap.table), redact=phi),
                "new_version": snap.created,
            },
        )

    return [sources, sheet]
