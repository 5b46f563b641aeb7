"""The local lakehouse: real Delta tables written by Spark and committed atomically with delta-rs."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from ontos_pipeline.lakehouse import LakehouseError


def rows(df):
    return sorted(tuple(r) for r in df.collect())


def test_write_read_overwrite_and_append(spark, lakehouse):
    df = spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string")
    assert lakehouse.write("raw.things", df) == 0
    assert lakehouse.write("raw.things", df.limit(1).withColumn("name", F.lit("z")), mode="append") == 1
    assert rows(lakehouse.read(spark, "raw.things")) == [(1, "a"), (1, "z"), (2, "b")]
    assert lakehouse.row_count("raw.things") == 3
    lakehouse.write("raw.things", df)
    assert rows(lakehouse.read(spark, "raw.things")) == [(1, "a"), (2, "b")]
    assert rows(lakehouse.read(spark, "raw.things", version=1)) == [(1, "a"), (1, "z"), (2, "b")]
    assert str(lakehouse.name("raw.things")) == "ontos.raw.things"


def test_failed_write_leaves_the_previous_version_and_no_files(spark, lakehouse):
    good = spark.createDataFrame([(i,) for i in range(10)], "id long")
    lakehouse.write("raw.fragile", good)
    before = sorted(p.name for p in lakehouse.path("raw.fragile").iterdir())

    @F.udf("long")
    def explode_on_seven(x):
        if x == 7:
            raise ValueError("boom")
        return x

    bad = spark.range(20).select(explode_on_seven("id").alias("id"))
    with pytest.raises(Exception, match="boom"):
        lakehouse.write("raw.fragile", bad)
    assert lakehouse.version("raw.fragile") == 0
    assert rows(lakehouse.read(spark, "raw.fragile")) == [(i,) for i in range(10)]
    assert sorted(p.name for p in lakehouse.path("raw.fragile").iterdir()) == before


def test_upsert_is_idempotent(spark, lakehouse):
    df = spark.createDataFrame([("a", 1), ("b", 2)], "k string, v long")
    lakehouse.upsert(spark, "raw.kv", df, ["k"])
    lakehouse.upsert(spark, "raw.kv", df, ["k"])
    assert rows(lakehouse.read(spark, "raw.kv")) == [("a", 1), ("b", 2)]
    lakehouse.upsert(spark, "raw.kv", spark.createDataFrame([("b", 3), ("c", 4)], "k string, v long"), ["k"])
    assert rows(lakehouse.read(spark, "raw.kv")) == [("a", 1), ("b", 3), ("c", 4)]


def test_workbench_tables_follow_their_ddl(spark, lakehouse):
    lakehouse.ensure("alerts")
    assert lakehouse.read(spark, "alerts").columns[:3] == ["alert_id", "use_case", "kind"]
    assert lakehouse.row_count("alerts") == 0
    now = datetime.now(UTC)
    ok = spark.createDataFrame([("a1", "uc", "drift", "high", "psi 0.4", "open", now)],
                               "alert_id string, use_case string, kind string, severity string, message string, "
                               "status string, created_at timestamp")
    lakehouse.write("alerts", ok)
    assert lakehouse.read(spark, "alerts").first()["evidence"] is None  # optional columns are filled with nulls
    with pytest.raises(LakehouseError, match=r"ontos.workbench.alerts: columns \['colour'\] are not in its DDL"):
        lakehouse.write("alerts", ok.withColumn("colour", F.lit("red")))
    with pytest.raises(LakehouseError, match=r"required columns \['status'\] are missing"):
        lakehouse.write("alerts", ok.drop("status"))
    with pytest.raises(LakehouseError, match=r"NOT NULL columns hold nulls \(\{'message': 1\}\); nothing was"):
        lakehouse.write("alerts", ok.withColumn("message", F.lit(None).cast("string")))
    assert lakehouse.row_count("alerts") == 1


def test_names_are_validated_identifiers(lakehouse):
    for bad in ("raw.x; drop table y", "a.b.c.d", "raw.`x`", "../etc/passwd"):
        with pytest.raises(LakehouseError):
            lakehouse.name(bad)


def test_reading_a_missing_table_says_what_to_do(spark, lakehouse):
    with pytest.raises(LakehouseError, match=r"table ontos\.raw\.nothing does not exist; materialize"):
        lakehouse.read(spark, "raw.nothing")


def test_streamed_batches_with_a_wrong_schema_write_nothing(lakehouse):
    schema = pa.schema([("a", pa.int64())])

    def batches():
        yield pa.record_batch([pa.array([1, 2])], schema=schema)
        yield pa.record_batch([pa.array(["x"])], names=["a"])

    with pytest.raises(LakehouseError, match="a batch has schema"):
        lakehouse.write_batches("raw.streamed", schema, batches)
    assert not lakehouse.exists("raw.streamed")
    lakehouse.write_batches("raw.streamed", schema, lambda: iter([pa.record_batch([pa.array([5])], schema=schema)]))
    assert lakehouse.row_count("raw.streamed") == 1


def test_concurrent_upserts_from_two_processes_lose_no_rows(spark, lakehouse, home):
    """Two runs (processes) upserting their own keys into one table at once: a read-modify-write race would let
    the later commit drop the other's rows; the table lock serializes them."""
    import subprocess
    import sys

    lakehouse.write("ontos.workbench.scratch", spark.createDataFrame([("seed", 0)], "key string, n long"))
    script = """
import sys
from ontos_pipeline.lakehouse import LocalLakehouse
from ontos_pipeline.spark_session import get_spark
spark, home, who = get_spark(), sys.argv[1], sys.argv[2]
lakehouse = LocalLakehouse(f"{home}/tables", "ontos", "workbench", files_root=f"{home}/files")
for i in range(6):
    lakehouse.upsert(spark, "ontos.workbench.scratch",
                     spark.createDataFrame([(f"{who}-{i}", i)], "key string, n long"), keys=["key"])
"""
    children = [subprocess.Popen([sys.executable, "-c", script, str(home), who]) for who in ("a", "b")]
    assert [c.wait(timeout=600) for c in children] == [0, 0]
    keys = sorted(r["key"] for r in lakehouse.records("ontos.workbench.scratch"))
    assert keys == sorted(["seed", *[f"{w}-{i}" for w in "ab" for i in range(6)]])
