"""`ontos trace`: a real served answer traced back to its model version, MLflow training run, data versions, label
rows (of the item, or of the nearest training items) and feedback; and the same trace on the endpoint asset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests

from ontos_pipeline.deploy.trace import (
    COLUMN_SPACE,
    MODEL_SPACE,
    column_distance_nearest,
    format_trace,
    trace_request,
    training_items,
)
from ontos_pipeline.platform.model_store import CHAMPION, local_store
from ontos_pipeline.train.trainer.models import with_prompt
from ontos_pipeline_tests.conftest import AUTH
from ontos_pipeline_tests.kinds import items, labelled_kind

COLUMNS = ["item_ref", "x", "color", "note"]
SOURCES = {"import", "expert"}  # label files dropped in the inbox


@pytest.fixture(scope="module")
def traced(spark, tmp_path_factory):
    """The enum kind trained by the retrain job (champion v1), served, three requests answered and one feedback."""
    from dagster import instance_for_test

    from ontos_pipeline.deploy.serving.server import BackgroundServer, ServingOptions
    from ontos_pipeline.pipeline import RETRAIN
    from ontos_pipeline_tests.test_serving import _port

    root = tmp_path_factory.mktemp("trace")
    normal = items("enum", 300, 1)
    settings, defs, lakehouse, spec = labelled_kind(spark, root, "enum", normal)
    home = root / "home"
    store = local_store(home)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    (home / "dagster").mkdir(parents=True)
    with instance_for_test(temp_dir=str(home / "dagster")) as instance:
        result = defs.resolve_job_def(RETRAIN).execute_in_process(
            partition_key=spec.name, instance=instance, run_config=quiet
        )
    assert result.success
    endpoint_metadata = result.asset_materializations_for_node("serving_endpoint")[0].metadata
    champion = store.version(spec.name, CHAMPION)
    [run] = lakehouse.records("training_runs", {"model_version": str(champion.version)})
    trained = {
        r["item_ref"]: r
        for r in lakehouse.read(spark, "qa_pairs").filter("split = 'train'").select("item_ref", "split").collect()
    }
    known = normal[normal["item_ref"].isin(sorted(trained))].iloc[0]
    fresh = items("enum", 2, 99)  # not in the sheet
    records = {
        "item": [{c: known[c] for c in COLUMNS}],
        "nearest": [
            {c: fresh.iloc[0][c] for c in COLUMNS if c != "item_ref"},  # no item_ref at all
            {**{c: fresh.iloc[1][c] for c in COLUMNS}, "item_ref": "NEW-0001"},  # an item_ref without labels
        ],
    }
    ids = {}
    with BackgroundServer(settings, ServingOptions(port=_port(), flush_seconds=0.2)) as server:
        url = f"{server.url}/serving-endpoints/{spec.serving.endpoint_name}/invocations"
        for name, body in records.items():
            answer = requests.post(url, json={"dataframe_records": body}, headers=AUTH, timeout=60)
            assert answer.status_code == 200, answer.text
            ids[name] = answer.headers["x-request-id"]
        given = requests.post(
            f"{server.url}/feedback",
            json={"request_id": ids["item"], "rating": "down", "correction": "high", "author": "rita"},
            headers=AUTH,
            timeout=60,
        )
        assert given.status_code == 201, given.text
    return {
        "settings": settings,
        "lakehouse": lakehouse,
        "store": store,
        "spec": spec,
        "champion": champion,
        "run": run,
        "ids": ids,
        "known": known,
        "fresh": fresh,
        "endpoint_metadata": endpoint_metadata,
        "trained": set(trained),
    }


def _trace(spark, traced, name: str, k: int = 5):
    return trace_request(
        spark,
        traced["lakehouse"],
        traced["store"],
        {traced["spec"].name: traced["spec"]},
        traced["ids"][name],
        k=k,
    )


def test_the_trace_names_the_model_version_its_training_run_and_data_versions_and_the_items_labels(spark, traced):
    trace = _trace(spark, traced, "item")
    run, champion = traced["run"], traced["champion"]
    assert trace.request["request_id"] == traced["ids"]["item"] and trace.request["status_code"] == 200
    assert trace.request["caller"] and trace.request["endpoint_name"] == traced["spec"].serving.endpoint_name
    assert trace.request["response"][0]["response"] in ("low", "mid", "high")
    m = trace.model
    assert m.model_version == str(champion.version) == "1" and trace.use_case == "enum_case"
    assert m.run_id == champion.run_id == run["mlflow_run_id"]
    assert (m.training_sheet_version, m.sheet_version, m.template_version) == (
        run["training_sheet_version"],
        run["sheet_version"],
        run["template_version"],
    )
    assert m.label_snapshot_version == run["label_snapshot_version"] is not None
    assert m.params["training_sheet_version"] == run["training_sheet_version"]
    assert (
        m.pack["mlflow_run_id"] == run["mlflow_run_id"]
        and m.qa_table_version == m.pack["data"]["qa_pairs_table_version"]
    )
    assert m.train_rows and m.problems == ()
    [record] = trace.records
    ref = traced["known"]["item_ref"]
    assert (record.match, record.item_ref) == ("item", ref) and record.training["split"] == "train"
    [label] = record.labels
    assert label["item_ref"] == ref and label["source"] in SOURCES and label["labeled_by"]
    assert label["created_at"].tzinfo is not None and label["trained_on"]
    assert label["label_data"] == traced["known"]["response"]
    [feedback] = trace.feedback
    assert (feedback["rating"], feedback["correction"], feedback["author"]) == ("down", "high", "rita")
    text = format_trace(trace)
    for needle in (
        trace.request["request_id"],
        m.run_id,
        m.training_sheet_version,
        m.sheet_version,
        ref,
        label["source"],
    ):
        assert needle in text


def test_a_request_without_a_labelled_item_gets_the_k_nearest_training_items_in_the_models_feature_space(spark, traced):
    trace = _trace(spark, traced, "nearest")
    assert [(r.match, r.item_ref) for r in trace.records] == [("nearest", None), ("nearest", "NEW-0001")]
    assert "no labels" in trace.records[1].note
    lh, spec = traced["lakehouse"], traced["spec"]
    model = traced["store"].load(traced["store"].version_uri(spec.name, "1"))
    train = training_items(spark, lh, spec, trace.model).toPandas()  # the test's brute force: a small table
    x = model.predictor.features.dense(with_prompt(model.template, model.columns, train))
    for record, (_, query) in zip(trace.records, traced["fresh"].iterrows(), strict=True):
        assert record.space == MODEL_SPACE and len(record.neighbours) == 5
        assert {n.item_ref for n in record.neighbours} <= traced["trained"]
        distances = [n.distance for n in record.neighbours]
        assert distances == sorted(distances)
        q = model.predictor.features.dense(with_prompt(model.template, model.columns, query.to_frame().T[COLUMNS]))
        expected = np.sort(np.sqrt(((x - q) ** 2).sum(axis=1)))[:5]
        assert np.allclose(distances, expected, atol=1e-4)
        for n in record.neighbours:
            [label] = n.labels
            assert label["source"] in SOURCES and label["labeled_by"] and label["created_at"] and label["trained_on"]
    assert len(_trace(spark, traced, "nearest", k=3).records[0].neighbours) == 3
    assert trace.feedback == []


def test_the_column_distance_finds_a_training_item_itself_first(spark, traced):
    trace = _trace(spark, traced, "item")
    rows = training_items(spark, traced["lakehouse"], traced["spec"], trace.model)
    known = traced["known"]
    found = column_distance_nearest(rows, traced["spec"], {c: known[c] for c in COLUMNS}, 3)
    assert found[0] == (known["item_ref"], 0.0) and len(found) == 3
    assert [d for _, d in found] == sorted(d for _, d in found) and "Jaccard" in COLUMN_SPACE


def test_the_cli_prints_text_and_json_and_names_an_unknown_id_with_exit_2(traced, monkeypatch, capsys):
    from ontos_pipeline.cli import main

    settings = traced["settings"]
    monkeypatch.setenv("ONTOS_HOME", str(settings.home))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(settings.use_cases_dir))
    rid, run_id = traced["ids"]["item"], traced["run"]["mlflow_run_id"]
    assert main(["trace", rid]) == 0
    out = capsys.readouterr().out
    assert f"request {rid}" in out and run_id in out and "labels of the item" in out and "rita" in out
    assert main(["trace", traced["ids"]["nearest"], "--json", "--k", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["model_version"] == "1" and data["model"]["run_id"] == run_id
    assert data["model"]["pack_uri"] == f"runs:/{run_id}/reproducibility/pack.json"
    assert [len(r["neighbours"]) for r in data["records"]] == [2, 2]
    assert data["records"][0]["neighbours"][0]["labels"][0]["source"] in SOURCES
    assert main(["trace", "no-such-request"]) == 2
    err = capsys.readouterr().err
    assert "unknown request id 'no-such-request'" in err and "Traceback" not in err
    env = {**os.environ, "ONTOS_HOME": str(settings.home), "ONTOS_USE_CASES_DIR": str(settings.use_cases_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "ontos_pipeline.cli", "trace", "feedbeef"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2 and "unknown request id 'feedbeef'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_endpoint_asset_carries_the_trace_of_the_served_version(traced):
    meta = {k: v.value for k, v in traced["endpoint_metadata"].items()}
    run = traced["run"]
    assert meta["served_version"] == meta["trace_model_version"] == "1"
    assert meta["trace_mlflow_run_id"] == run["mlflow_run_id"]
    assert meta["trace_training_sheet_version"] == run["training_sheet_version"]
    assert meta["trace_sheet_version"] == run["sheet_version"]
    assert meta["trace_template_version"] == run["template_version"]
    assert meta["trace_label_snapshot_version"] == str(run["label_snapshot_version"])
    assert isinstance(meta["trace_training_labels"], int) and meta["trace_training_labels"] > 0
    assert "trace_problems" not in meta
