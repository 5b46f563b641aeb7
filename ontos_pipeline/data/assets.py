"""DATA assets: the source tables (`synthetic` group) and the validated sheet snapshot with its checks."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetExecutionContext, Config, DataVersion, MaterializeResult
from pydantic import Field

from ontos_pipeline.data import quality
from ontos_pipeline.data.sheet import build_sheet, published_sheet
from ontos_pipeline.data.sources import materialize_sources
from ontos_pipeline.metadata import check_result, column_schema, markdown_preview, md_table
from ontos_pipeline.resources.base import LakehouseResource, SparkResource, UseCasesResource
from ontos_pipeline.steps import Check, Step, step_inputs


class SourcesConfig(Config):
    rows: int | None = Field(default=None, description="Items to generate (default: the spec's synthetic.rows)")
    seed: int | None = Field(default=None, description="Generator seed (default: the spec's synthetic.seed)")


def sources(
    context: AssetExecutionContext, config: SourcesConfig, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> MaterializeResult:
    spec = use_cases.get(context.partition_key)
    tables = materialize_sources(lakehouse.get(), spec, rows=config.rows, seed=config.seed)
    primary = next(t for t in tables if t.name.endswith(f".{spec.primary_table.split('.')[-1]}"))
    return MaterializeResult(
        metadata={
            "dagster/row_count": primary.rows,
            "tables": md_table(
                [{"table": t.name, "role": t.role, "rows": t.rows, "version": t.version} for t in tables],
                ["table", "role", "rows", "version"],
            ),
            "generated": spec.synthetic is not None,
        }
    )


def sheet(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    snap = build_sheet(session, lh, spec, run_id=context.run_id)
    phi = [c["name"] for c in snap.columns if "phi" in c["tags"]]
    context.log.info(
        f"sheet {spec.name} version {snap.version}: {snap.row_count} rows in {snap.table}"
        + ("" if snap.created else " (unchanged, snapshot reused)")
    )
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


def _snapshot(context, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource):
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    snap = published_sheet(lh, spec)
    return spec, snap, lh.read(session, snap.table)


def frame_rules(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, snap, df = _snapshot(context, spark, lakehouse, use_cases)
    return check_result(quality.check_frame_rules(df, spec), version=snap.version)


def item_ref_unique(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    _, snap, df = _snapshot(context, spark, lakehouse, use_cases)
    return check_result(quality.check_unique_keys(df), version=snap.version)


def images_present(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, snap, df = _snapshot(context, spark, lakehouse, use_cases)
    return check_result(quality.check_images(df, spec, lakehouse.get().volume_path()), version=snap.version)


def phi_scan(
    context: AssetExecutionContext, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec = use_cases.get(context.partition_key)
    snap = published_sheet(lakehouse.get(), spec)
    return check_result(quality.check_phi_declared(snap.phi_findings, spec), version=snap.version)


SOURCES = Step(
    "sources",
    sources,
    group="synthetic",
    kinds=frozenset({"delta", "python"}),
    config=SourcesConfig,
    description="Raw source tables of the use case: generated deterministically for the demo use cases (sources, "
    "ground-truth labels, drifted batch), otherwise checked to exist.",
)

SHEET = Step(
    "sheet",
    sheet,
    group="data",
    deps=("sources",),
    kinds=frozenset({"spark", "delta"}),
    description="Validated snapshot of the use case's source tables: joined, typed, one row per item_ref, versioned "
    "by content hash and registered in the `sheets` table.",
    checks=(
        Check(
            "frame_rules",
            "pandera: column types, nullability, numeric ranges and allowed values from the spec",
            frame_rules,
        ),
        Check("item_ref_unique", "item_ref is non-null and unique", item_ref_unique),
        Check("images_present", "every image column points at an existing file", images_present),
        Check(
            "phi_scan",
            "PII/PHI scan of text columns (emails, phones, SSN-like ids, dates of birth); PHI is "
            "allowed only in columns tagged phi, whose training use is then prohibited",
            phi_scan,
        ),
    ),
)
