"""Data quality rules for sheets: pandera frame rules, key uniqueness, image files, PII/PHI scan.

Each rule runs distributed in Spark and returns a `CheckOutcome` whose description says what is wrong, where
(column, item_ref examples) and what to do. Dagster asset checks are thin wrappers around these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd
import pandera.pyspark as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ontos_pipeline.platform.checks import CheckOutcome
from ontos_pipeline.platform.ddl import SPEC_TYPES, spark_type
from ontos_pipeline.platform.images import resolve_cell
from ontos_pipeline.platform.phi import PHI_PATTERNS
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

EXAMPLES = 5


def _examples(df: DataFrame, condition, extra: str | None = None) -> list[str]:
    cols = [ITEM_KEY] + ([extra] if extra and extra != ITEM_KEY else [])
    rows = df.filter(condition).select(*cols).limit(EXAMPLES).collect()
    if extra and extra != ITEM_KEY:
        return [f"{r[ITEM_KEY]} ({extra}={r[extra]!r})" for r in rows]
    return [str(r[ITEM_KEY]) for r in rows]


# -- frame rules (pandera) --------------------------------------------------------------------------------------
def pandera_schema(spec: UseCaseSpec) -> pa.DataFrameSchema:
    """Types, nullability, ranges and allowed values of the sheet columns, as a pandera (PySpark) schema."""
    columns = {}
    for c in spec.sheet.columns:
        checks = []
        if c.range is not None:
            checks.append(pa.Check.in_range(c.range[0], c.range[1]))
        if c.values is not None:
            checks.append(pa.Check.isin(list(c.values)))
        columns[c.name] = pa.Column(spark_type(SPEC_TYPES[c.type]), checks=checks, nullable=c.nullable)
    return pa.DataFrameSchema(columns, strict=False, name=f"sheet:{spec.name}")


def check_frame_rules(df: DataFrame, spec: UseCaseSpec) -> CheckOutcome:
    """Validate with pandera, then count and show offending rows for each failed rule."""
    errors = schema_errors(pandera_schema(spec).validate(df))
    failures = []
    types = {f.name: f.dataType.simpleString() for f in df.schema}
    mistyped = {e.get("column") for e in errors if str(e.get("check")).startswith("dtype")}
    for err in errors:
        column, rule = err.get("column"), str(err.get("check"))
        if column in mistyped and not rule.startswith("dtype"):
            continue  # value rules on a column of the wrong type say nothing more
        c = next((x for x in spec.sheet.columns if x.name == column), None)
        item = {"column": column, "rule": rule, "error": err.get("error")}
        if c is None or column not in df.columns:
            item.update(rows=None, examples=[], hint="the column is missing from the sheet")
        elif rule.startswith("dtype"):
            item.update(rows=None, examples=[], hint=f"the sheet stores {types[column]}, the spec declares {c.type}")
        else:
            cond = _violation(c, df)
            item.update(rows=df.filter(cond).count(), examples=_examples(df, cond, column))
        failures.append(item)
    if not failures:
        return CheckOutcome(
            True,
            f"{len(spec.sheet.columns)} columns match their types, nullability, ranges and allowed values",
            {"columns_checked": len(spec.sheet.columns)},
        )
    lines = [
        f"column {f['column']!r} fails {f['rule']}"
        + (f": {f['rows']} rows, e.g. item_ref {', '.join(f['examples'])}" if f.get("rows") else "")
        + (f" ({f['hint']})" if f.get("hint") else "")
        for f in failures
    ]
    return CheckOutcome(
        False,
        "Sheet rows break the spec: " + "; ".join(lines) + f". Fix the source rows or the column rules in {spec.path}.",
        {"failures": failures},
    )


def schema_errors(validated: DataFrame) -> list[dict]:
    report = validated.pandera.errors
    return [e for by_type in report.values() for errs in by_type.values() for e in errs]


def _violation(c, df: DataFrame):
    col = F.col(c.name)
    cond = F.lit(False)
    if not c.nullable:
        cond = cond | col.isNull()
    if c.range is not None:
        cond = cond | (col.isNotNull() & ((col < c.range[0]) | (col > c.range[1])))
    if c.values is not None:
        cond = cond | (col.isNotNull() & ~col.isin(list(c.values)))
    return cond


# -- keys -------------------------------------------------------------------------------------------------------
def check_unique_keys(df: DataFrame) -> CheckOutcome:
    nulls = df.filter(F.col(ITEM_KEY).isNull()).count()
    dupes = df.groupBy(ITEM_KEY).count().filter(F.col("count") > 1)
    n_dupes = dupes.count()
    if not nulls and not n_dupes:
        return CheckOutcome(True, f"{ITEM_KEY} is present and unique", {"null_keys": 0, "duplicate_keys": 0})
    examples = [
        f"{r[ITEM_KEY]} (x{r['count']})"
        for r in dupes.orderBy(F.col("count").desc(), ITEM_KEY).limit(EXAMPLES).collect()
    ]
    parts = []
    if n_dupes:
        parts.append(f"{n_dupes} {ITEM_KEY} values occur more than once, e.g. {', '.join(examples)}")
    if nulls:
        parts.append(f"{nulls} rows have no {ITEM_KEY}")
    return CheckOutcome(
        False,
        "; ".join(parts) + ". Each item must appear exactly once: deduplicate the primary "
        "source or make the joined table's key unique.",
        {"null_keys": nulls, "duplicate_keys": n_dupes, "examples": examples},
    )


# -- images -----------------------------------------------------------------------------------------------------
def _files_exist(root: str | None):
    def exist(paths: pd.Series) -> pd.Series:
        return paths.map(lambda p: bool(p) and os.path.isfile(resolve_cell(p, root)))

    return exist


def check_images(df: DataFrame, spec: UseCaseSpec, root: str | None = None) -> CheckOutcome:
    """Every non-null path of an image column points at an existing file (relative paths under `root`, the
    lakehouse files folder; checked on the executors)."""
    image_cols = [c.name for c in spec.sheet.columns_of("image")]
    if not image_cols:
        return CheckOutcome(True, "no image columns in this sheet", {"image_columns": 0})
    exists = F.pandas_udf(_files_exist(root), "boolean")  # built here: a UDF needs an active Spark session
    flags = df.select(
        ITEM_KEY,
        *[(exists(F.col(c)) | F.col(c).isNull()).alias(c) for c in image_cols],
        *[F.col(c).alias(f"_path_{c}") for c in image_cols],
    )
    counts = flags.agg(*[F.sum((~F.col(c)).cast("long")).alias(c) for c in image_cols]).first()
    missing = {c: int(counts[c] or 0) for c in image_cols}
    if not any(missing.values()):
        return CheckOutcome(True, f"all image files present in {', '.join(image_cols)}", {"missing": missing})
    details = []
    for c, n in missing.items():
        if n:
            rows = flags.filter(~F.col(c)).select(ITEM_KEY, f"_path_{c}").limit(EXAMPLES).collect()
            details.append(
                f"column {c!r}: {n} missing files, e.g. item_ref "
                + ", ".join(f"{r[ITEM_KEY]} ({r[f'_path_{c}']})" for r in rows)
            )
    return CheckOutcome(
        False,
        "Image files are missing: " + "; ".join(details) + ". Restore the files or fix the paths in the source table.",
        {"missing": missing},
    )


# -- PII / PHI --------------------------------------------------------------------------------------------------
def scan_phi(df: DataFrame, text_columns: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Count rows per text column and PHI pattern in one pass; return non-zero findings with example items."""
    if not text_columns:
        return {}
    aggs = [
        F.sum(F.coalesce(F.col(c).rlike(p), F.lit(False)).cast("long")).alias(f"{c}|{kind}")
        for c in text_columns
        for kind, p in PHI_PATTERNS.items()
    ]
    counts = df.agg(*aggs).first().asDict()
    findings: dict[str, dict[str, dict]] = {}
    for key, n in counts.items():
        if n:
            column, kind = key.split("|")
            examples = _examples(df, F.col(column).rlike(PHI_PATTERNS[kind]))
            findings.setdefault(column, {})[kind] = {"rows": int(n), "examples": examples}
    return findings


def check_phi_declared(findings: Mapping[str, Mapping[str, dict]], spec: UseCaseSpec) -> CheckOutcome:
    """PHI may flow only through columns the spec tags `phi` (so usage constraints apply); anything else fails."""
    declared = {c.name for c in spec.sheet.columns if "phi" in c.tags}
    undeclared = {c: f for c, f in findings.items() if c not in declared}
    summary = {c: {k: v["rows"] for k, v in f.items()} for c, f in findings.items()}
    if not undeclared:
        text = (
            f"PHI found only in columns tagged phi ({', '.join(sorted(findings))}): training use is prohibited "
            "there unless consent allows it"
            if findings
            else "no PII/PHI found in text columns"
        )
        return CheckOutcome(True, text, {"findings": summary, "phi_columns": sorted(declared)})
    parts = []
    for column, kinds in undeclared.items():
        index = next(i for i, c in enumerate(spec.sheet.columns) if c.name == column)
        found = ", ".join(
            f"{v['rows']} rows with {k} (e.g. item_ref {', '.join(v['examples'][:3])})" for k, v in kinds.items()
        )
        parts.append(f"column {column!r} ({spec.path}: sheet.columns[{index}]) holds {found}")
    return CheckOutcome(
        False,
        "Undeclared PII/PHI: " + "; ".join(parts) + ". Remove it from the source, or add "
        "`tags: [phi]` to the column so training use is prohibited.",
        {"findings": summary, "undeclared": sorted(undeclared)},
    )
