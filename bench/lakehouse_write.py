"""Benchmark: how the local lakehouse writes a table, against the two plain alternatives.

    uv run python bench/lakehouse_write.py [--rows 1000000]

1. ours: Spark writes Parquet files (distributed) into a fresh folder, delta-rs commits them in one Delta commit
   (atomic: readers see the old or the new version, never a mix; a crash leaves only unreferenced files).
2. spark_parquet: `df.write.mode("overwrite").parquet(folder)` -- distributed, but not atomic: the old files are
   deleted first, so a crash or a concurrent reader sees a half-written or empty table.
3. driver_deltalake: `write_deltalake(path, df.toArrow())` -- atomic, but the whole table goes through the
   driver's memory (not distributed).

Each variant runs in its own process; peak RSS is the process tree (Python + JVM). Prints a table, writes JSON.
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
from measure import ROOT, run_child

VARIANTS = ("ours", "spark_parquet", "driver_deltalake")


def child(variant: str, rows: int, folder: str) -> dict:
    from pyspark.sql import functions as F

    from ontos_pipeline.platform.lakehouse import LocalLakehouse
    from ontos_pipeline.platform.spark_session import get_spark

    spark = get_spark()
    df = spark.range(rows).select(
        F.format_string("IT-%08d", "id").alias("item_ref"),
        (F.col("id") % 97).cast("double").alias("x"),
        F.sha2(F.col("id").cast("string"), 256).alias("text"),
        F.current_timestamp().alias("ts"),
    )
    df.limit(1).collect()  # session and code warm-up outside the timing
    started = time.perf_counter()
    if variant == "ours":
        LocalLakehouse(Path(folder) / "tables").write("bench.t", df)
    elif variant == "spark_parquet":
        df.write.mode("overwrite").parquet(str(Path(folder) / "t"))
    else:
        from deltalake import write_deltalake

        write_deltalake(str(Path(folder) / "t"), df.toArrow(), mode="overwrite")
    return {"write_s": time.perf_counter() - started}


def measure(variant: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ontos-bench-write-") as folder:
        out = Path(folder) / "result.json"
        return run_child(
            [sys.executable, __file__, "--child", variant, "--rows", str(rows), "--folder", folder, "--out", str(out)],
            out,
            variant,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--folder")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        Path(args.out).write_text(json.dumps(child(args.child, args.rows, args.folder)))
        return
    results = [measure(v, args.rows) for v in VARIANTS]
    base = results[0]
    print(f"\nlakehouse write: {args.rows:,} rows, {os.cpu_count()} cores\n")
    print(f"{'variant':<18}{'write s':>10}{'peak RSS MB':>14}{'time vs ours':>14}{'atomic':>8}{'distributed':>13}")
    for r in results:
        atomic = "yes" if r["variant"] != "spark_parquet" else "no"
        dist = "no" if r["variant"] == "driver_deltalake" else "yes"
        print(
            f"{r['variant']:<18}{r['write_s']:>10.2f}{r['peak_rss_mb']:>14,.0f}"
            f"{r['write_s'] / base['write_s']:>14.2f}{atomic:>8}{dist:>13}"
        )
    path = ROOT / "bench" / "results" / f"lakehouse_write_{args.rows}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
