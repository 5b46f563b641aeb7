"""DATA stage: build a sheet snapshot from a use case's source tables (join, cast, version, register).

Plain functions over Spark DataFrames; they know nothing of Dagster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ontos_pipeline.data.quality import scan_phi
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.ddl import SPEC_TYPES, spark_type
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.versions import latest_published, publish_version
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

REGISTRY = tables.SHEETS
_COMPATIBLE = {
    "string": (T.StringType, T.VarcharType, T.CharType),
    "integer": (T.LongType, T.IntegerType, T.ShortType, T.ByteType),
    "double": (T.DoubleType, T.FloatType, T.DecimalType),
    "boolean": (T.BooleanType,),
    "date": (T.DateType,),
    "timestamp": (T.TimestampType, T.TimestampNTZType),
}


class SheetBuildError(ValueError):
    """The sources do not match the spec; the message names the spec field, the table and the column."""


@dataclass(frozen=True)
class SheetSnapshot:
    sheet_id: str
    use_case: str
    version: str
    table: str
    row_count: int
    columns: list[dict]
    phi_findings: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    created: bool = True  # False when this exact version already existed (re-materialization)


def snapshot_table(spec: UseCaseSpec, version: str) -> str:
    return f"sheet_{spec.name}_{version[:12]}"


def read_sources(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> dict[str, DataFrame]:
    """Read every source table and check it has the declared columns with compatible types."""
    frames = {}
    for source in spec.sheet.sources.values():
        where = f"{spec.path}: sheet.sources.{source.name}"
        if not lakehouse.exists(source.table):
            raise SheetBuildError(
                f"{where}.table: table {lakehouse.name(source.table)} does not exist; "
                "materialize the `sources` asset for this use case or create the table"
            )
        df = lakehouse.read(spark, source.table)
        actual = {f.name: f.dataType for f in df.schema}
        for column, declared in source.columns.items():
            if column not in actual:
                raise SheetBuildError(
                    f"{where}.columns.{column}: table {lakehouse.name(source.table)} has no "
                    f"column {column!r} (it has {', '.join(actual)})"
                )
            if not isinstance(actual[column], _COMPATIBLE[declared]):
                raise SheetBuildError(
                    f"{where}.columns.{column}: table {lakehouse.name(source.table)} stores it "
                    f"as {actual[column].simpleString()}, the spec declares {declared}"
                )
        frames[source.name] = df
    return frames


def assemble_sheet(spec: UseCaseSpec, sources: Mapping[str, DataFrame]) -> DataFrame:
    """Join the sources as the spec says and select the typed sheet columns (item_ref first)."""

    def prefixed(name: str) -> DataFrame:
        df = sources[name]
        return df.select(*[F.col(f"`{c}`").alias(f"{name}__{c}") for c in spec.sheet.sources[name].columns])

    sheet = prefixed(spec.sheet.primary)
    for join in spec.sheet.joins:
        right = prefixed(join.source)
        cond = sheet[f"{join.left.source}__{join.left.column}"] == right[f"{join.source}__{join.right.column}"]
        sheet = sheet.join(right, cond, join.how)
    columns = sorted(spec.sheet.columns, key=lambda c: c.name != ITEM_KEY)
    return sheet.select(
        *[F.col(f"{c.ref.source}__{c.ref.column}").cast(spark_type(SPEC_TYPES[c.type])).alias(c.name) for c in columns]
    )


def content_version(df: DataFrame) -> str:
    """Order-independent content hash of the rows and the schema, computed in one distributed pass.

    Each column is hashed on its own (with its null flag) before the row's hash: Spark hashes the elements of
    adjacent array columns as one sequence, so moving `training` from `allowed_uses` to the next column,
    `prohibited_uses`, left the row's hash unchanged, and a training sheet whose usage changed kept its old
    version and rows."""
    cols = [F.xxhash64(F.col(f"`{c}`").isNull(), F.col(f"`{c}`")) for c in df.columns]
    agg = df.agg(F.count(F.lit(1)).alias("n"), F.sum(F.xxhash64(*cols).cast("decimal(20,0)")).alias("h")).first()
    digest = hashlib.sha256(json.dumps([df.schema.json(), agg["n"], str(agg["h"])]).encode())
    return digest.hexdigest()[:20]


def column_specs(spec: UseCaseSpec, detected: Mapping[str, Mapping[str, object]]) -> list[dict]:
    """The sheet's columns with declared tags plus `phi` where the scan found personal data."""
    out = []
    for c in spec.sheet.columns:
        tags = sorted(set(c.tags) | ({"phi"} if detected.get(c.name) else set()))
        out.append(
            {
                "name": c.name,
                "type": c.type,
                "category": c.category,
                "nullable": c.nullable,
                "tags": tags,
                "declared_tags": list(c.tags),
            }
        )
    return out


def build_sheet(
    spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, run_id: str | None = None
) -> SheetSnapshot:
    """Assemble the sheet, write its snapshot table (once per version) and publish it in the registry."""
    sheet = assemble_sheet(spec, read_sources(spark, lakehouse, spec))
    version = content_version(sheet)
    table = snapshot_table(spec, version)
    created = not lakehouse.exists(table)
    if created:
        lakehouse.write(table, sheet)  # one atomic commit; the name carries the version, so it is written once
    snapshot = lakehouse.read(spark, table)
    findings = scan_phi(snapshot, [c.name for c in spec.sheet.columns_of("text")])
    cols = column_specs(spec, findings)
    row_count = lakehouse.row_count(table)
    register(lakehouse, spec, version, str(lakehouse.name(table)), row_count, cols, findings, run_id)
    return SheetSnapshot(spec.name, spec.name, version, str(lakehouse.name(table)), row_count, cols, findings, created)


def register(
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    version: str,
    table: str,
    row_count: int,
    cols: list[dict],
    findings: Mapping,
    run_id: str | None,
) -> None:
    """Publish `version` in the sheet registry and archive the previously published versions of this sheet."""
    row = {
        "sheet_id": spec.name,
        "use_case": spec.name,
        "version": version,
        "snapshot_table": table,
        "row_count": row_count,
        "column_specs": json.dumps(cols),
        "quality": json.dumps(findings, default=str),
        "created_at": datetime.now(UTC),
        "dagster_run_id": run_id,
    }
    publish_version(lakehouse, REGISTRY, row, keys=["sheet_id", "version"], scope=lambda r: r["sheet_id"] == spec.name)


def current_sheet(lakehouse: Lakehouse, use_case: str) -> SheetSnapshot | None:
    """The published snapshot of a use case's sheet, or None if the sheet was never materialized."""
    row = latest_published(lakehouse, REGISTRY, {"sheet_id": use_case})
    if row is None:
        return None
    return SheetSnapshot(
        row["sheet_id"],
        row["use_case"],
        row["version"],
        row["snapshot_table"],
        row["row_count"],
        json.loads(row["column_specs"]),
        json.loads(row["quality"] or "{}"),
        False,
    )


def published_sheet(lakehouse: Lakehouse, spec: UseCaseSpec) -> SheetSnapshot:
    """The use case's published sheet; a clear error if the sheet asset was never materialized."""
    snapshot = current_sheet(lakehouse, spec.name)
    if snapshot is None:
        raise RuntimeError(f"no published sheet for {spec.name}; materialize the sheet asset first")
    return snapshot
