"""Benchmark: training-sheet assembly for 1,000,000 items, our Spark path vs a plain single-process Jinja2 loop.

    uv run python bench/training_sheet_1m.py [--rows 1000000] [--use-case predictive_maintenance]

Setup (not timed, its own process): generate the use case, build its sheet, merge its labels, register its
template. Then, each in its own process with the peak RSS of the process tree sampled every 50 ms:
- ours: `build_training_sheet` — messages rendered in Spark (template compiled once per partition), joined with
  canonical labels and review decisions, split, versioned and committed to `qa_pairs`;
- plain: what a user would write — read the sheet and the labels with pandas, loop over the rows rendering the
  same sandboxed template with Jinja2, attach the label, write Parquet.
Finally the two outputs are compared row by row (in Spark): messages and responses must be equal.
Prints a table and writes bench/results/training_sheet_<use case>_<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, run_child, stop_engine


def _context(home: str, use_case: str):
    os.environ["ONTOS_HOME"] = home
    from ontos_pipeline.platform.spark_session import get_spark
    from ontos_pipeline.settings import load_settings
    from ontos_pipeline.specs import load_use_cases

    settings = load_settings()
    spec = load_use_cases(settings.use_cases_dir)[use_case]
    return get_spark(), settings.local_lakehouse(), spec


def setup(use_case: str, rows: int, home: str) -> dict:
    from ontos_pipeline.data.sheet import build_sheet
    from ontos_pipeline.data.sources import materialize_sources
    from ontos_pipeline.generate.template import compile_template, register_template
    from ontos_pipeline.label.labels import merge_labels

    spark, lakehouse, spec = _context(home, use_case)
    materialize_sources(lakehouse, spec, rows=rows)
    snapshot = build_sheet(spark, lakehouse, spec)
    labels = merge_labels(spark, lakehouse, spec, snapshot)
    register_template(lakehouse, compile_template(spec, [c["name"] for c in snapshot.columns]))
    return {"sheet_rows": snapshot.row_count, "labelled": labels.labelled}


def run_ours(use_case: str, rows: int, home: str) -> dict:
    from ontos_pipeline.data.sheet import current_sheet
    from ontos_pipeline.generate.template import current_template
    from ontos_pipeline.generate.training_sheet import build_training_sheet

    spark, lakehouse, spec = _context(home, use_case)
    started = time.perf_counter()
    result = build_training_sheet(
        spark, lakehouse, spec, current_sheet(lakehouse, spec.name), current_template(lakehouse, spec.name)
    )
    return {"assembly_s": time.perf_counter() - started, "rows": result.rows}


def run_plain(use_case: str, rows: int, home: str) -> dict:
    import pandas as pd
    from deltalake import DeltaTable
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from ontos_pipeline.settings import load_settings
    from ontos_pipeline.specs import load_use_cases

    os.environ["ONTOS_HOME"] = home
    settings = load_settings()
    spec = load_use_cases(settings.use_cases_dir)[use_case]
    tables = settings.tables_dir / settings.catalog / settings.schema
    started = time.perf_counter()
    sheet_path = next(p for p in tables.iterdir() if p.name.startswith(f"sheet_{use_case}_"))
    sheet = DeltaTable(str(sheet_path)).to_pandas()
    labels = DeltaTable(str(tables / "canonical_labels")).to_pandas()
    labels = labels.sort_values("version").drop_duplicates("item_ref", keep="last").set_index("item_ref")
    from ontos_pipeline.generate.template import finalize_value  # the same printing of values (None, timestamps)

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, finalize=finalize_value)
    system, prompt = env.from_string(spec.template.system_prompt), env.from_string(spec.template.prompt)
    integers = [c.name for c in spec.sheet.columns if c.type == "integer"]
    sheet = sheet.astype({c: "Int64" for c in integers}).astype(object)
    sheet = sheet.where(sheet.notna(), None)
    out_refs, out_messages, out_responses = [], [], []
    for row in sheet.to_dict("records"):
        messages = [{"role": "system", "content": system.render(row)}, {"role": "user", "content": prompt.render(row)}]
        out_refs.append(row["item_ref"])
        out_messages.append(json.dumps(messages, ensure_ascii=False))
        out_responses.append(labels["label_data"].get(row["item_ref"]))
    pd.DataFrame({"item_ref": out_refs, "messages": out_messages, "response": out_responses}).to_parquet(
        Path(home) / "plain_training_sheet.parquet"
    )
    return {"assembly_s": time.perf_counter() - started, "rows": len(out_refs)}


def compare(use_case: str, rows: int, home: str) -> dict:
    from pyspark.sql import functions as F

    spark, lakehouse, _ = _context(home, use_case)
    ours = lakehouse.read(spark, "qa_pairs").select("item_ref", "messages", "response")
    plain = spark.read.parquet(str(Path(home) / "plain_training_sheet.parquet"))
    joined = ours.alias("o").join(plain.alias("p"), "item_ref", "full_outer")
    differ = joined.filter(
        ~F.col("o.messages").eqNullSafe(F.col("p.messages")) | ~F.col("o.response").eqNullSafe(F.col("p.response"))
    ).count()
    return {"rows_compared": joined.count(), "rows_differing": differ}


CHILDREN = {"setup": setup, "ours": run_ours, "plain": run_plain, "compare": compare}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--use-case", default="predictive_maintenance")
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--home")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        Path(args.out).write_text(json.dumps(CHILDREN[args.child](args.use_case, args.rows, args.home)))
        return
    with tempfile.TemporaryDirectory(prefix="ontos-bench-ts-") as home:

        def child(name: str) -> dict:
            out = Path(home) / f"{name}.json"
            return run_child(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    "--use-case",
                    args.use_case,
                    "--rows",
                    str(args.rows),
                    "--home",
                    home,
                    "--out",
                    str(out),
                ],
                out,
                name,
                home=home,
            )

        try:
            prepared = child("setup")
            ours, plain = child("ours"), child("plain")
            check = child("compare")
        finally:
            stop_engine(home)
    print(
        f"\ntraining-sheet assembly: {args.use_case}, {args.rows:,} items "
        f"({prepared['labelled']:,} labelled), {os.cpu_count()} cores\n"
    )
    print(f"{'metric':<18}{'ours (Spark)':>16}{'plain Jinja2 loop':>20}{'ours/plain':>12}")
    for key in ("assembly_s", "process_wall_s", "peak_rss_mb"):
        print(f"{key:<18}{ours[key]:>16,.1f}{plain[key]:>20,.1f}{ours[key] / plain[key]:>12.2f}")
    print(f"\noutputs compared: {check['rows_compared']:,} rows, {check['rows_differing']} differ")
    path = ROOT / "bench" / "results" / f"training_sheet_{args.use_case}_{args.rows}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "use_case": args.use_case,
                "rows": args.rows,
                "cores": os.cpu_count(),
                "setup": prepared,
                "ours": ours,
                "plain": plain,
                "compare": check,
                "ratios": {k: ours[k] / plain[k] for k in ("assembly_s", "peak_rss_mb")},
            },
            indent=2,
        )
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
