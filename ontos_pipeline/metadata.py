"""Helpers that turn stage results into Dagster metadata (tables, previews, check results)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, TableColumn, TableSchema
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ontos_pipeline.platform.checks import CheckOutcome
from ontos_pipeline.platform.console import markdown_table

PREVIEW_ROWS = 5
_CELL = 60


def markdown_preview(df: DataFrame, rows: int = PREVIEW_ROWS, redact: Collection[str] = ()) -> MetadataValue:
    """A markdown table of the first rows (only `rows` rows reach the driver); `redact` columns are masked."""
    cols = df.columns
    records = (
        df.select(*[F.lit("[redacted: phi]").alias(c) if c in redact else F.col(f"`{c}`") for c in cols])
        .limit(rows)
        .collect()
    )
    return MetadataValue.md(markdown_table([[r[c] for c in cols] for r in records], cols, width=_CELL))


def md_table(rows: Sequence[Mapping], columns: Sequence[str], width: int = 120) -> MetadataValue:
    """Dict rows as a markdown table of `columns`."""
    return MetadataValue.md(markdown_table([[r.get(c) for c in columns] for r in rows], columns, width))


def md_counts(counts: Mapping[object, object]) -> MetadataValue:
    return md_table([{"value": k, "count": v} for k, v in counts.items()], ["value", "count"])


def first_values(column, limit: int = 5):
    """An aggregate: the first `limit` non-null values of `column`, sorted (a check's examples)."""
    return F.slice(F.sort_array(F.collect_list(column)), 1, limit)


def count_with_examples(df: DataFrame, label, limit: int = 5) -> tuple[int, list[str]]:
    """How many rows `df` has and the first `limit` values of `label` (a column) among them, in one Spark job
    (for checks: the offending rows are normally none)."""
    row = df.agg(F.count(F.lit(1)).alias("n"), first_values(label, limit).alias("examples")).first()
    return int(row["n"]), [str(v) for v in row["examples"] or []]


def column_schema(columns: list[dict]) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                c["name"],
                c["type"],
                description=f"{c['category']}" + (f"; tags: {', '.join(c['tags'])}" if c["tags"] else ""),
                tags={t: "" for t in c["tags"]},
            )
            for c in columns
        ]
    )


def check_result(outcome: CheckOutcome, **metadata: object) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={**{k: _meta(v) for k, v in outcome.metadata.items()}, **{k: _meta(v) for k, v in metadata.items()}},
    )


def _meta(value: object) -> object:
    return MetadataValue.json(value) if isinstance(value, dict | list) else value
