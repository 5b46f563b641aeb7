"""An AI Gateway payload table read as `inference_log`: every request shape, a multi-record request, failed
requests, model versions from served entities, and a monitoring report computed on the result."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.monitor.monitoring import Window, monitor, served_records
from ontos_pipeline.platform.ddl import load_ddl
from ontos_pipeline.platform.inference_tables import payload_as_inference_log, request_records
from ontos_pipeline_tests.kinds import kind_spec

T0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
PAYLOAD_SCHEMA = T.StructType(
    [
        T.StructField("request_date", T.DateType()),
        T.StructField("databricks_request_id", T.StringType()),
        T.StructField("client_request_id", T.StringType()),
        T.StructField("request_time", T.TimestampType()),
        T.StructField("status_code", T.IntegerType()),
        T.StructField("sampling_fraction", T.DoubleType()),
        T.StructField("execution_duration_ms", T.LongType()),
        T.StructField("request", T.StringType()),
        T.StructField("response", T.StringType()),
        T.StructField("served_entity_id", T.StringType()),
        T.StructField("logging_error_codes", T.ArrayType(T.StringType())),
        T.StructField("requester", T.StringType()),
    ]
)
A = {"item_ref": "I-1", "x": 0.9, "color": "red", "note": "Checked twice."}
B = {"item_ref": "I-2", "x": -1.2, "color": "blue", "note": "Night shift."}
C = {"item_ref": "I-3", "x": 0.1, "color": "blue", "note": "Routine reading."}


def _answers(*labels: str) -> str:
    return json.dumps({"predictions": [{"response": label, "confidence": 0.75} for label in labels]})


def _row(
    i: int,
    request: str | None,
    status: int,
    response: str | None,
    entity: str = "ent-1",
    latency: int = 20,
    codes: list[str] | None = None,
    client_id: str | None = None,
) -> tuple:
    at = T0 + timedelta(seconds=i)
    return (
        at.date(),
        f"db-{i}",
        client_id,
        at,
        status,
        1.0,
        latency,
        request,
        response,
        entity,
        codes or [],
        "someone@example.com",
    )


@pytest.fixture
def payload(spark):
    split = {
        "dataframe_split": {
            "columns": ["item_ref", "x", "color", "note"],
            "index": [0, 1],
            "data": [list(B.values()), list(C.values())],
        }
    }
    rows = [
        _row(0, json.dumps({"dataframe_records": [A]}), 200, _answers("high"), latency=12),
        _row(1, json.dumps(split), 200, _answers("low", "mid"), entity="ent-2", latency=30),  # two records
        _row(
            2,
            json.dumps({"inputs": {k: [v] for k, v in C.items()}}),
            200,
            _answers("mid"),
            latency=18,
            client_id="mine-2",
        ),
        _row(3, json.dumps({"inputs": A}), 200, _answers("high"), entity="ent-unknown", latency=25),
        _row(
            4,
            json.dumps({"dataframe_records": [{"item_ref": "I-9", "x": "heavy"}]}),
            400,
            json.dumps({"error_code": "BAD_REQUEST", "message": "record 0: column 'x' must be double, got \"heavy\""}),
            latency=3,
        ),
        _row(5, "this is not json", 400, None, latency=1),  # the server's answer was not logged
        _row(6, None, 200, None, latency=40, codes=["MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"]),
    ]
    return spark.createDataFrame(rows, PAYLOAD_SCHEMA)


def test_payload_rows_become_inference_log_rows(payload):
    log = payload_as_inference_log(payload, "enum_case", {"ent-1": "3", "ent-2": "4"})
    expected = load_ddl(INFERENCE_LOG).spark_schema()
    assert [(f.name, f.dataType) for f in log.schema.fields] == [(f.name, f.dataType) for f in expected.fields]
    rows = {r["request_id"]: r.asDict() for r in log.collect()}
    assert len(rows) == 7  # one row per request, as the local endpoint logs them

    first = rows["db-0"]
    assert json.loads(first["inputs"]) == [A]
    assert json.loads(first["response"]) == [{"response": "high", "confidence": 0.75}]
    assert (first["status_code"], first["error"], first["latency_ms"], first["model_version"]) == (200, None, 12.0, "3")
    assert (first["endpoint_name"], first["rendered_prompt"]) == ("enum_case", None)
    assert first["request_time"].replace(tzinfo=UTC) == T0

    assert json.loads(rows["db-1"]["inputs"]) == [B, C]  # dataframe_split: one request, two records
    assert [a["response"] for a in json.loads(rows["db-1"]["response"])] == ["low", "mid"]
    assert rows["db-1"]["model_version"] == "4"
    assert json.loads(rows["db-2"]["inputs"]) == [C]  # inputs, columnar
    assert json.loads(rows["db-3"]["inputs"]) == [A]  # inputs, one record
    assert rows["db-3"]["model_version"] is None  # served entity not in `versions`

    bad = rows["db-4"]
    assert (bad["status_code"], bad["response"], bad["latency_ms"]) == (400, None, 3.0)
    assert bad["error"] == "record 0: column 'x' must be double, got \"heavy\""
    assert json.loads(bad["inputs"]) == [{"item_ref": "I-9", "x": "heavy"}]  # parsed, then refused (as locally)
    garbled = rows["db-5"]
    assert (garbled["inputs"], garbled["response"], garbled["error"]) == ("this is not json", None, "HTTP 400")
    too_big = rows["db-6"]
    assert (too_big["inputs"], too_big["response"], too_big["error"], too_big["status_code"]) == (None, None, None, 200)


def test_client_request_id_when_databricks_gave_none_and_no_versions(payload):
    without_id = payload.withColumn("databricks_request_id", F.lit(None).cast("string")).filter(
        F.col("client_request_id").isNotNull()
    )
    rows = payload_as_inference_log(without_id, "enum_case").collect()
    assert [(r["request_id"], r["model_version"]) for r in rows] == [("mine-2", None)]
    with pytest.raises(ValueError, match="missing column"):
        payload_as_inference_log(payload.drop("request"), "enum_case")


def test_request_records_is_the_serving_parser():
    assert json.loads(request_records(json.dumps({"dataframe_records": [A, B]}))) == [A, B]
    assert request_records('{"records": []}') == '{"records": []}'  # not an accepted shape: kept as sent
    assert request_records(None) is None


def test_monitoring_runs_unchanged_on_the_mapped_table(spark, lakehouse, payload, tmp_path):
    spec, _ = kind_spec(tmp_path, "enum")
    log = payload_as_inference_log(payload, spec.serving.endpoint_name, {"ent-1": "3", "ent-2": "4"})
    assert served_records(log).count() == 5  # records answered: 1 + 2 + 1 + 1
    lakehouse.write(INFERENCE_LOG, log, mode="append")  # the workbench table's DDL and NOT NULL checks pass
    report = monitor(spark, lakehouse, spec, Window(T0, T0 + timedelta(minutes=1)), None)
    assert (report.request_count, report.records) == (7, 5)
    assert report.error_rate == pytest.approx(2 / 7)
    assert report.status_counts == {"200": 5, "400": 2}
    assert report.response_distribution == {"high": 2, "low": 1, "mid": 2}
    assert report.latency_ms["p50"] == pytest.approx(18.0)
