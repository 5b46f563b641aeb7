"""Helpers that turn stage results into Dagster metadata (tables, previews, check results)."""

from __future__ import annotations

from collections.abc import Collection

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, TableColumn, TableSchema
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ontos_pipeline.stages.quality import CheckOutcome

PREVIEW_ROWS = 5
_CELL = 60


def markdown_preview(df: DataFrame, rows: int = PREVIEW_ROWS, redact: Collection[str] = ()) -> MetadataValue:
    """A markdown table of the first rows (only `rows` rows reach the driver); `redact` columns are masked."""
    cols = df.columns
    records = df.select(*[F.lit("[redacted: phi]").alias(c) if c in redact else F.col(f"`{c}`") for c in cols]) \
        .limit(rows).collect()

    def cell(value: object) -> str:
        text = "" if value is None else str(value).replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= _CELL else text[: _CELL - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in records]
    return MetadataValue.md("\n".join(lines))


def first_values(column, limit: int = 5):
    """An aggregate: the first `limit` non-null values of `column`, sorted (a check's examples)."""
    return F.slice(F.sort_array(F.collect_list(column)), 1, limit)


def count_with_examples(df: DataFrame, label, limit: int = 5) -> tuple[int, list[str]]:
    """How many rows `df` has and the first `limit` values of `label` (a column) among them, in one Spark job
    (for checks: the offending rows are normally none)."""
    row = df.agg(F.count(F.lit(1)).alias("n"), first_values(label, limit).alias("examples")).first()
    return int(row["n"]), [str(v) for v in row["examples"] or []]


def column_schema(columns: list[dict]) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(c["name"], c["type"], description=f"{c['category']}" + (f"; tags: {', '.join(c['tags'])}"
                                                                            if c["tags"] else ""),
                    tags={t: "" for t in c["tags"]})
        for c in columns
    ])


def check_result(outcome: CheckOutcome, **metadata: object) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={**{k: _meta(v) for k, v in outcome.metadata.items()}, **{k: _meta(v) for k, v in metadata.items()}},
    )


def _meta(value: object) -> object:
    return MetadataValue.json(value) if isinstance(value, dict | list) else value
