"""Benchmark: generate + materialize the sheet of one use case at 1,000,000 items, ours vs plain pandas.

Each variant runs in its own process (so one cannot warm the other); the parent samples the resident memory of
the whole process tree (Python + Spark's JVM) every 50 ms. Both variants start from the same deterministic
generator output and do the same work: write the raw tables, join the primary table with its dimension table,
cast to the sheet's types, validate (types, nullability, ranges, allowed values, unique item_ref, PII scan of text
columns) and write the sheet.

    uv run python bench/sheet_1m.py [--rows 1000000] [--use-case predictive_maintenance]

Prints a table and writes bench/results/sheet_<use case>_<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, run_child, stop_engine

RESULTS = ROOT / "bench" / "results"


# -- the two variants (run in a child process) -------------------------------------------------------------------
def run_ours(use_case: str, rows: int, home: str) -> dict:
    """The product path: Dagster materializes `sources`, `sheet` and the blocking checks in one run."""
    from dagster import AssetKey, DagsterInstance

    from ontos_pipeline.definitions import build_definitions
    from ontos_pipeline.pipeline import FULL_PIPELINE
    from ontos_pipeline.settings import load_settings

    os.environ["ONTOS_HOME"] = home
    settings = load_settings()
    job = build_definitions(settings).resolve_job_def(FULL_PIPELINE)
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=use_case,
        instance=DagsterInstance.ephemeral(),
        asset_selection=[AssetKey("sources"), AssetKey("sheet")],  # and the sheet's checks
        run_config={
            "ops": {"sources": {"config": {"rows": rows}}},
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
        },
    )
    total = time.perf_counter() - started
    steps = {
        e.step_key: e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    sheet_rows = result.asset_materializations_for_node("sheet")[0].metadata["dagster/row_count"].value
    # the sheet's checks run inside its step (ontos_pipeline/steps.py), like the plain script's inline validation
    return {
        "total_s": total,
        "generate_s": steps.get("sources"),
        "sheet_s": steps.get("sheet"),
        "checks_s": None,
        "sheet_rows": sheet_rows,
        "checks_passed": checks,
    }


def run_pandas(use_case: str, rows: int, home: str) -> dict:
    """What a user would write without the platform: generator -> Parquet, then pandas merge + validate."""
    import re

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ontos_pipeline.settings import default_use_cases_dir
    from ontos_pipeline.specs import load_use_cases
    from synthetic_data.generator import generate_tables

    spec = load_use_cases(default_use_cases_dir())[use_case]
    syn = spec.synthetic
    started = time.perf_counter()
    raw = Path(home) / "raw"
    raw.mkdir(parents=True)
    for table in generate_tables(
        syn.generator,
        rows=rows,
        drifted_rows=max(1, syn.drifted_rows * rows // syn.rows),
        seed=syn.seed,
        image_dir=Path(home) / "images",
    ):
        with pq.ParquetWriter(raw / f"{table.name}.parquet", table.schema) as writer:
            for batch in table.batches():
                writer.write_batch(batch)
    generated = time.perf_counter()

    frames = {name: pd.read_parquet(raw / f"{s.table}.parquet") for name, s in spec.sheet.sources.items()}
    sheet = frames[spec.sheet.primary].add_prefix(f"{spec.sheet.primary}__")
    for j in spec.sheet.joins:
        right = frames[j.source].add_prefix(f"{j.source}__")
        sheet = sheet.merge(
            right, how=j.how, left_on=f"{j.left.source}__{j.left.column}", right_on=f"{j.source}__{j.right.column}"
        )
    dtypes = {
        "string": "string",
        "integer": "Int64",
        "double": "float64",
        "boolean": "boolean",
        "date": "object",
        "timestamp": "datetime64[us, UTC]",
    }
    sheet = pd.DataFrame(
        {c.name: sheet[f"{c.ref.source}__{c.ref.column}"].astype(dtypes[c.type]) for c in spec.sheet.columns}
    )
    problems = {}
    for c in spec.sheet.columns:
        col = sheet[c.name]
        if not c.nullable:
            problems[f"{c.name}:nulls"] = int(col.isna().sum())
        if c.range:
            problems[f"{c.name}:range"] = int(((col < c.range[0]) | (col > c.range[1])).sum())
        if c.values:
            problems[f"{c.name}:values"] = int((col.notna() & ~col.isin(c.values)).sum())
    problems["item_ref:duplicates"] = int(sheet["item_ref"].duplicated().sum())
    for c in spec.sheet.columns_of("text"):
        for kind, pattern in (
            ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
            ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
        ):
            problems[f"{c.name}:{kind}"] = int(sheet[c.name].str.contains(re.compile(pattern), na=False).sum())
    pq.write_table(pa.Table.from_pandas(sheet, preserve_index=False), Path(home) / "sheet.parquet")
    done = time.perf_counter()
    return {
        "total_s": done - started,
        "generate_s": generated - started,
        "sheet_s": done - generated,
        "checks_s": None,
        "sheet_rows": len(sheet),
        "problems": sum(problems.values()),
    }


# -- the parent: run each variant in a child, sample memory -------------------------------------------------------
def measure(variant: str, use_case: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"ontos-bench-{variant}-") as home:
        out = Path(home) / "result.json"
        try:
            return run_child(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    variant,
                    "--use-case",
                    use_case,
                    "--rows",
                    str(rows),
                    "--home",
                    home,
                    "--out",
                    str(out),
                ],
                out,
                variant,
                home=home,
            )
        finally:
            stop_engine(home)  # a cold engine per run: the figure includes its start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--use-case", default="predictive_maintenance")
    parser.add_argument("--child", choices=["ours", "pandas"])
    parser.add_argument("--home")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        run = run_ours if args.child == "ours" else run_pandas
        Path(args.out).write_text(json.dumps(run(args.use_case, args.rows, args.home)))
        return

    results = [measure("ours", args.use_case, args.rows), measure("pandas", args.use_case, args.rows)]
    ours, plain = results

    def fmt(v):
        return "-" if v is None else f"{v:,.1f}" if isinstance(v, float) else str(v)

    print(f"\nsheet benchmark: {args.use_case}, {args.rows:,} items, {os.cpu_count()} cores\n")
    keys = ["process_wall_s", "generate_s", "sheet_s", "checks_s", "peak_rss_mb", "sheet_rows"]
    print(f"{'metric':<16}{'ours (Dagster+Spark+Delta)':>28}{'plain pandas':>16}{'ours/pandas':>14}")
    for k in keys:
        ratio = ours[k] / plain[k] if isinstance(ours[k], float | int) and plain[k] else None
        print(f"{k:<16}{fmt(ours[k]):>28}{fmt(plain[k]):>16}{fmt(ratio) if ratio else '-':>14}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"sheet_{args.use_case}_{args.rows}.json"
    path.write_text(
        json.dumps(
            {
                "use_case": args.use_case,
                "rows": args.rows,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "results": results,
                "ratios": {k: ours[k] / plain[k] for k in ("process_wall_s", "peak_rss_mb")},
            },
            indent=2,
        )
    )
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
