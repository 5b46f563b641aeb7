"""The local lakehouse: real Delta tables written by Spark and committed atomically with delta-rs."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from ontos_pipeline.platform.lakehouse import LakehouseError


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
    ok = spark.createDataFrame(
        [("a1", "uc", "drift", "high", "psi 0.4", "open", now)],
        "alert_id string, use_case string, kind string, severity string, message string, "
        "status string, created_at timestamp",
    )
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
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.spark_session import get_spark
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


def _alert(alert_id: str, use_case: str = "uc", status: str = "open", **extra) -> dict:
    return {
        "alert_id": alert_id,
        "use_case": use_case,
        "kind": "drift",
        "severity": "high",
        "message": "psi 0.4",
        "status": status,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    }


def test_record_upserts_and_replacements_are_single_idempotent_commits_without_spark(lakehouse):
    v0 = lakehouse.upsert_records("alerts", [_alert("a1"), _alert("a2")], keys=["alert_id"])
    assert lakehouse.upsert_records("alerts", [_alert("a1"), _alert("a2")], keys=["alert_id"]) == v0 + 1
    assert sorted(r["alert_id"] for r in lakehouse.records("alerts")) == ["a1", "a2"]  # re-running duplicates nothing
    lakehouse.upsert_records("alerts", [_alert("a2", status="resolved"), _alert("a3")], keys=["alert_id"])
    assert {r["alert_id"]: r["status"] for r in lakehouse.records("alerts")} == {
        "a1": "open",
        "a2": "resolved",
        "a3": "open",
    }
    lakehouse.upsert_records("alerts", [_alert("b1", use_case="other")], keys=["alert_id"])
    before = lakehouse.version("alerts")
    assert lakehouse.replace_records("alerts", [_alert("a9")], {"use_case": "uc"}) == before + 1  # one commit
    assert sorted(r["alert_id"] for r in lakehouse.records("alerts")) == ["a9", "b1"]
    lakehouse.replace_records("alerts", [_alert("a9")], {"use_case": "uc"})
    assert sorted(r["alert_id"] for r in lakehouse.records("alerts")) == ["a9", "b1"]
    assert lakehouse.records("alerts", {"alert_id": ["b1", "zz"]}, columns=["use_case"]) == [{"use_case": "other"}]
    assert len(lakehouse.records("alerts", limit=1)) == 1


def test_bad_records_name_the_column_and_write_nothing(lakehouse):
    lakehouse.upsert_records("alerts", [_alert("a1")], keys=["alert_id"])
    version = lakehouse.version("alerts")
    with pytest.raises(LakehouseError, match=r"write to ontos.workbench.alerts: column 'created_at' expects"):
        lakehouse.upsert_records("alerts", [_alert("a2", created_at="yesterday")], keys=["alert_id"])
    with pytest.raises(LakehouseError, match=r"row 0 has no value for required column\(s\) status"):
        lakehouse.upsert_records("alerts", [_alert("a2", status=None)], keys=["alert_id"])
    with pytest.raises(LakehouseError, match=r"record 0 does not match \{'use_case': 'uc'\}"):
        lakehouse.replace_records("alerts", [_alert("a2", use_case="other")], {"use_case": "uc"})
    assert lakehouse.version("alerts") == version
    assert [r["alert_id"] for r in lakehouse.records("alerts")] == ["a1"]


def test_concurrent_record_upserts_from_two_processes_lose_no_rows(lakehouse, home):
    """delta-rs merges with optimistic concurrency, no lock: a commit that loses the race is retried on the
    winner's version, so neither process drops the other's rows."""
    import subprocess
    import sys

    script = """
import sys
from datetime import UTC, datetime
from ontos_pipeline.platform.lakehouse import LocalLakehouse
home, who = sys.argv[1], sys.argv[2]
lakehouse = LocalLakehouse(f"{home}/tables", "ontos", "workbench", files_root=f"{home}/files")
for i in range(15):
    lakehouse.upsert_records("alerts", [{"alert_id": f"{who}-{i}", "use_case": who, "kind": "drift",
        "severity": "high", "message": "m", "status": "open", "created_at": datetime.now(UTC)}], keys=["alert_id"])
    lakehouse.replace_records("gap_reports", [{"gap_id": f"{who}-{i}", "report_id": "r", "use_case": who,
        "kind": "drift", "description": "d", "evidence": "{}", "suggested_action": "a", "severity": "high",
        "created_at": datetime.now(UTC)}], {"use_case": who})
"""
    children = [subprocess.Popen([sys.executable, "-c", script, str(home), who]) for who in ("a", "b")]
    assert [c.wait(timeout=600) for c in children] == [0, 0]
    assert sorted(r["alert_id"] for r in lakehouse.records("alerts")) == sorted(
        f"{w}-{i}" for w in "ab" for i in range(15)
    )
    assert sorted(r["gap_id"] for r in lakehouse.records("gap_reports")) == ["a-14", "b-14"]


def test_concurrent_first_appends_to_a_missing_table_lose_no_rows(lakehouse):
    """Writers that all find the table missing: one creates it, every append lands (none overwrites another)."""
    import threading
    from datetime import UTC, datetime

    writers = 4
    for round_ in range(5):
        lakehouse.drop("label_rejects")
        start = threading.Barrier(writers)

        def append(who: int, round_: int = round_, start: threading.Barrier = start) -> None:
            start.wait()
            lakehouse.append_records(
                "label_rejects",
                [
                    {
                        "reject_id": f"{round_}-{who}",
                        "sheet_id": "s",
                        "label_type": "t",
                        "source": "s",
                        "reason": "r",
                        "created_at": datetime.now(UTC),
                    }
                ],
            )

        threads = [threading.Thread(target=append, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r["reject_id"] for r in lakehouse.records("label_rejects")) == [
            f"{round_}-{w}" for w in range(writers)
        ]


def test_record_tables_are_read_and_written_without_importing_pyspark(home):
    import subprocess
    import sys

    script = """
import sys
from datetime import UTC, datetime
from ontos_pipeline.platform.lakehouse import LocalLakehouse
lakehouse = LocalLakehouse(sys.argv[1] + "/tables", "ontos", "workbench")
lakehouse.append_records("alerts", [{"alert_id": "x", "use_case": "u", "kind": "drift", "severity": "high",
                                    "message": "m", "status": "open", "created_at": datetime.now(UTC)}])
lakehouse.update_records("alerts", {"alert_id": "x"}, {"status": "resolved"})
assert lakehouse.records("alerts", columns=["status"]) == [{"status": "resolved"}]
assert not [m for m in sys.modules if m.startswith("pyspark")], "pyspark was imported"
"""
    subprocess.run([sys.executable, "-c", script, str(home)], check=True, timeout=120)
