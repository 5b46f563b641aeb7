"""Feedback becomes labels, and the retrain sensor counts every actionable feedback exactly once."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
from dagster import DagsterInstance, build_sensor_context

from ontos_pipeline.data.sheet import build_sheet
from ontos_pipeline.definitions import build_definitions
from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.improve.retrain import is_actionable
from ontos_pipeline.improve.sensors import RETRAIN_SENSOR
from ontos_pipeline.label.feedback import FEEDBACK, Feedback, FeedbackSource, record_feedback
from ontos_pipeline.label.label_files import inbox_dir
from ontos_pipeline.label.labels import DEFAULT_SOURCES, current_labels, merge_labels
from ontos_pipeline.pipeline import RETRAIN
from ontos_pipeline.settings import load_settings
from ontos_pipeline.specs import load_use_case
from ontos_pipeline_tests.conftest import SERVE_TOKEN, WIDGETS_SPEC
from ontos_pipeline_tests.widgets import good_widgets, write_labels, write_widgets

THRESHOLD = 7


def spec_with(folder, retrain: str):
    (folder / "widgets.yaml").write_text(WIDGETS_SPEC + retrain, encoding="utf-8")
    return load_use_case(folder / "widgets.yaml")


def feedback(item: str, rating: str | None = None, correction: object = None, request_id: str | None = None):
    return Feedback("widgets", request_id, item, rating, correction, None, "tester")


# -- feedback -> canonical labels ------------------------------------------------------------------------------
def test_corrections_and_confirmations_become_feedback_labels_and_bad_ones_are_rejected(
    spark, lakehouse, home, widgets_dir
):
    spec = spec_with(widgets_dir, "retrain: {correction_confidence: 0.85, confirm_confidence: 0.55}\n")
    write_widgets(spark, lakehouse, good_widgets(home))
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa")])
    snapshot = build_sheet(spark, lakehouse, spec)
    now = datetime.now(UTC)
    lakehouse.append_records(
        INFERENCE_LOG,
        [
            {
                "request_id": "r3",
                "request_time": now,
                "endpoint_name": "widgets",
                "model_version": "1",
                "inputs": '[{"item_ref": "W3"}]',
                "response": json.dumps([{"response": "not_ok", "confidence": 0.8}]),
                "latency_ms": 3.0,
                "status_code": 200,
            }
        ],
    )
    rows = record_feedback(
        lakehouse,
        spec,
        [
            feedback("W2", "down", "not_ok"),  # a correction: overrides the imported label
            feedback("W3", "up", request_id="r3"),  # confirms the served answer
            feedback("W4", "down", "broken"),  # not in the response schema: rejected at intake, kept
            feedback("W99", "down", "ok"),  # an item the sheet does not hold: rejected by the merge
            feedback("W1", "down"),  # a thumbs-down without correction is a signal, not a label
        ],
    )
    assert [r["status"] for r in rows] == ["new", "new", "rejected", "new", "new"]
    assert "correction does not match the response schema" in rows[2]["reason"]
    assert lakehouse.row_count(FEEDBACK) == 5  # nothing is dropped

    merge_labels(spark, lakehouse, spec, snapshot, (*DEFAULT_SOURCES, FeedbackSource()))
    labels = {r["item_ref"]: r for r in current_labels(spark, lakehouse, "widgets", "widget_ok").collect()}
    assert (
        json.loads(labels["W2"]["label_data"]),
        labels["W2"]["source"],
        labels["W2"]["confidence"],
        labels["W2"]["labeled_by"],
    ) == ("not_ok", "feedback", 0.85, "tester")
    assert labels["W2"]["source_ref"] == f"feedback:{rows[0]['feedback_id']}"
    assert (json.loads(labels["W3"]["label_data"]), labels["W3"]["confidence"]) == ("not_ok", 0.55)
    assert json.loads(labels["W1"]["label_data"]) == "ok" and "W4" not in labels
    from ontos_pipeline.train.training_data import feedback_items

    fed = feedback_items(spark, lakehouse, spec, "widgets")  # what training weights (W2) and caps (W3)
    assert (fed.corrected, fed.confirmed) == ({"W2"}, {"W3"})
    rejects = {r["item_ref"]: r["reason"] for r in lakehouse.read(spark, "label_rejects").collect()}
    assert rejects == {"W99": f"unknown item_ref: not in sheet widgets version {snapshot.version}"}
    before = lakehouse.row_count("canonical_labels")
    merge_labels(spark, lakehouse, spec, snapshot, (*DEFAULT_SOURCES, FeedbackSource()))
    assert lakehouse.row_count("canonical_labels") == before  # idempotent


def test_thumbs_up_confirmation_is_off_for_sheets_with_phi(widgets_dir):
    phi = WIDGETS_SPEC.replace("category: text}", "category: text, tags: [phi]}")
    (widgets_dir / "widgets.yaml").write_text(phi, encoding="utf-8")
    assert load_use_case(widgets_dir / "widgets.yaml").retrain.confirm_thumbs_up is False
    assert spec_with(widgets_dir, "").retrain.confirm_thumbs_up is True
    with pytest.raises(ValueError, match=r"retrain.correction_confidence: expected a confidence between 0 and 1"):
        spec_with(widgets_dir, "retrain: {correction_confidence: 2}\n")
    with pytest.raises(ValueError, match=r"retrain.min_feedback: unknown field"):
        spec_with(widgets_dir, "retrain: {min_feedback: 2}\n")


# -- the retrain sensor ----------------------------------------------------------------------------------------
@pytest.fixture
def sensor_setup(lakehouse, home, widgets_dir):
    spec = spec_with(widgets_dir, f"retrain: {{min_actionable_feedback: {THRESHOLD}, min_reviewed_labels: 3}}\n")
    settings = load_settings({"ONTOS_HOME": str(home), "ONTOS_USE_CASES_DIR": str(widgets_dir)})
    return spec, build_definitions(settings)


def tick(defs, instance, cursor):
    """One real evaluation of the sensor, as the daemon does it (a fresh context: a restarted daemon)."""
    sensor = defs.resolve_sensor_def(RETRAIN_SENSOR)
    with build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, sensor_name=RETRAIN_SENSOR, resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_actionable_feedback_is_counted_exactly_once_across_restarts_and_repeated_ticks(
    lakehouse, sensor_setup, seed
):
    spec, defs = sensor_setup
    rng = random.Random(seed)
    instance = DagsterInstance.ephemeral()
    cursor, runs = None, {}
    for _ in range(rng.randint(12, 20)):
        batch = []
        for _ in range(rng.randint(1, 9)):
            kind = rng.choice(["up", "down", "correction", "bad"])
            batch.append(
                feedback(
                    f"W{rng.randint(1, 4)}", "up" if kind == "up" else "down", {"correction": "ok", "bad": 42}.get(kind)
                )
            )
        rng.shuffle(batch)
        record_feedback(lakehouse, spec, batch)
        for _ in range(rng.randint(0, 2)):  # zero to two ticks per batch; a second one repeats the same cursor
            result = tick(defs, instance, cursor)
            if rng.random() < 0.3:  # a concurrent tick evaluated with the same stored cursor
                twin = tick(defs, instance, cursor)
                assert [r.run_key for r in twin.run_requests] == [r.run_key for r in result.run_requests]
            for request in result.run_requests or []:
                assert request.partition_key == "widgets" and request.job_name in (None, RETRAIN)
                runs[request.run_key] = request  # the run key dedupes, as the daemon does
            cursor = result.cursor
            if not result.run_requests:
                assert "actionable feedback since seq" in result.skip_message

    rows = sorted(
        lakehouse.records(FEEDBACK, columns=["seq", "rating", "correction", "status"]), key=lambda r: r["seq"]
    )
    ranges = sorted(
        (
            int(r.tags["ontos/feedback_seq_from"]),
            int(r.tags["ontos/feedback_seq_to"]),
            int(r.tags["ontos/actionable_feedback"]),
        )
        for r in runs.values()
    )
    assert ranges, "the thresholds were reached, so at least one retrain was requested"
    expected_start = 1
    for start, end, counted in ranges:  # contiguous, disjoint, and each counts what its range holds
        assert start == expected_start
        assert counted == sum(is_actionable(r) for r in rows if start <= r["seq"] <= end) >= THRESHOLD
        expected_start = end + 1
    pending = sum(is_actionable(r) for r in rows if r["seq"] >= expected_start)
    assert pending < THRESHOLD or not tick(defs, instance, cursor).skip_message  # leftovers still trigger later
    assert sum(c for _, _, c in ranges) + pending == sum(is_actionable(r) for r in rows)  # none lost


def test_reviewed_labels_trigger_and_the_feedback_watermark_is_observed(lakehouse, sensor_setup):
    spec, defs = sensor_setup
    instance = DagsterInstance.ephemeral()
    first = tick(defs, instance, None)
    assert (
        not first.run_requests
        and "0/7 actionable feedback since seq 0 and 0/3 new reviewed labels" in first.skip_message
    )
    (inbox_dir(lakehouse, "widgets") / "task.csv").write_text("item_ref,label\nW1,ok\nW2,ok\nW3,not_ok\n")
    second = tick(defs, instance, first.cursor)
    assert [r.tags["ontos/new_reviewed_labels"] for r in second.run_requests] == ["3"]
    assert not tick(defs, instance, second.cursor).run_requests  # counted once

    record_feedback(lakehouse, spec, [feedback("W1", "up")])
    observed = tick(defs, instance, second.cursor)
    [event] = observed.asset_events
    assert (event.partition, event.tags["dagster/data_version"]) == ("widgets", "seq-1")
    assert not tick(defs, instance, observed.cursor).asset_events  # reported once per change


def test_a_breach_requests_one_retrain_with_new_labels_and_annotation_tasks_without(
    spark, lakehouse, home, widgets_dir
):
    from ontos_pipeline.monitor.alerts import Breach, raise_alerts, transition
    from ontos_pipeline.pipeline import IMPROVE

    spec = spec_with(widgets_dir, "retrain: {min_actionable_feedback: 50, breach_min_new_labels: 3}\n")
    defs = build_definitions(load_settings({"ONTOS_HOME": str(home), "ONTOS_USE_CASES_DIR": str(widgets_dir)}))
    instance = DagsterInstance.ephemeral()
    write_widgets(spark, lakehouse, good_widgets(home))
    raise_alerts(lakehouse, "widgets", [Breach("drift", "psi[maker]", 0.9, 0.2, ">=")], "r1")  # not a model input
    quiet = tick(defs, instance, None)
    assert not quiet.run_requests and "no new breach to act on" in quiet.skip_message

    [drift] = raise_alerts(lakehouse, "widgets", [Breach("drift", "psi[size_mm]", 0.7, 0.2, ">=")], "r2")
    tasks = tick(defs, instance, quiet.cursor)  # no labels yet: people label the drifted region first
    [request] = tasks.run_requests
    assert (request.job_name, request.partition_key) == (IMPROVE, "widgets")
    assert request.tags["ontos/alerts"] == drift["alert_id"] and request.tags["ontos/new_labels"] == "0"
    again = tick(defs, instance, tasks.cursor)
    assert not again.run_requests  # exactly once per breach, however often the sensor ticks
    assert [r.run_key for r in tick(defs, instance, quiet.cursor).run_requests] == [request.run_key]  # same key

    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa"), ("W3", "not_ok", "qa")])
    merge_labels(spark, lakehouse, spec, build_sheet(spark, lakehouse, spec))
    [accuracy] = raise_alerts(lakehouse, "widgets", [Breach("feedback", "positive_feedback_rate", 0.2, 0.5, "<")], "r3")
    retrain = tick(defs, instance, again.cursor)
    [request] = retrain.run_requests
    assert (request.job_name, request.tags["ontos/new_labels"]) == (RETRAIN, "3")
    assert request.tags["ontos/alerts"] == accuracy["alert_id"]
    assert not tick(defs, instance, retrain.cursor).run_requests

    transition(lakehouse, drift["alert_id"], "resolved", "tester")  # resolved alerts leave the cursor
    assert json.loads(tick(defs, instance, retrain.cursor).cursor)["@breaches"] == [accuracy["alert_id"]]


def test_a_breach_that_comes_with_feedback_requests_one_retrain_not_two(lakehouse, sensor_setup):
    from ontos_pipeline.monitor.alerts import Breach, raise_alerts

    spec, defs = sensor_setup
    instance = DagsterInstance.ephemeral()
    raise_alerts(lakehouse, "widgets", [Breach("drift", "psi[size_mm]", 0.7, 0.2, ">=")], "r1")
    record_feedback(lakehouse, spec, [feedback(f"W{i % 4 + 1}", "down", "ok") for i in range(THRESHOLD)])
    result = tick(defs, instance, None)
    assert [r.job_name for r in result.run_requests] == [RETRAIN]
    assert result.run_requests[0].tags["ontos/trigger"] == "feedback"
    assert not tick(defs, instance, result.cursor).run_requests  # the breach is covered by that retrain


# -- the loop, end to end on small data --------------------------------------------------------------------------
def drifted_items(n: int, seed: int):
    """Number items after a firmware change: the same rule plus 200, and a note that says so."""
    from ontos_pipeline_tests.kinds import items

    frame = items("number", n, seed)
    frame["item_ref"] = [f"D{seed}-{i:04d}" for i in range(n)]
    frame["note"] = "Firmware v2 unit."
    frame["response"] = (frame["response"] + 200).round(2)
    return frame


def test_feedback_on_drifted_items_retrains_by_sensor_and_the_new_champion_is_better_on_them(spark, tmp_path):
    from dagster import instance_for_test

    from ontos_pipeline.demo import traffic
    from ontos_pipeline.demo.improve import headline
    from ontos_pipeline.deploy.serving.server import BackgroundServer, ServingOptions
    from ontos_pipeline.platform.model_store import CHAMPION, local_store
    from ontos_pipeline_tests.kinds import items, labelled_kind
    from ontos_pipeline_tests.test_serving import _port

    columns = ["item_ref", "x", "color", "note"]
    normal = items("number", 400, 1)
    settings, defs, lakehouse, spec = labelled_kind(
        spark, tmp_path, "number", normal, extra="retrain: {min_actionable_feedback: 10}\n"
    )
    home = tmp_path / "home"
    store = local_store(home)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    (home / "dagster").mkdir(parents=True)
    with instance_for_test(temp_dir=str(home / "dagster")) as instance:
        first = defs.resolve_job_def(RETRAIN).execute_in_process(
            partition_key=spec.name, instance=instance, run_config=quiet
        )
        assert first.success and str(store.version(spec.name, CHAMPION).version) == "1"

        drifted = drifted_items(300, 2)  # new production data lands; most of it is served and gets feedback
        lakehouse.write("shop.items", spark.createDataFrame(drifted[columns]), mode="append")
        sent = drifted.iloc[:200].rename(columns={"response": traffic.TRUTH})
        held_out = drifted.iloc[200:].rename(columns={"response": traffic.TRUTH})
        with BackgroundServer(settings, ServingOptions(port=_port(), poll_seconds=0.2)) as server:
            result = traffic.send(
                server.url, spec, sent, feedback_rate=1.0, correction_share=1.0, error_share=0, token=SERVE_TOKEN
            )
        assert result.versions == {"1": 200} and result.feedback["correction"] >= 10

        [request] = tick(defs, instance, None).run_requests
        assert int(request.tags["ontos/actionable_feedback"]) == result.feedback["correction"]
        retrain = defs.resolve_job_def(RETRAIN).execute_in_process(
            partition_key=spec.name,
            instance=instance,
            run_config=quiet,
            tags={**request.tags, "dagster/sensor_name": RETRAIN_SENSOR, "dagster/run_key": request.run_key},
        )
        assert retrain.success
        assert str(store.version(spec.name, CHAMPION).version) == "2"
        [run] = instance.get_runs()[:1]
        assert run.tags["dagster/sensor_name"] == RETRAIN_SENSOR and run.job_name == RETRAIN

    labels = {r["item_ref"]: r for r in current_labels(spark, lakehouse, spec.name, spec.labels.label_type).collect()}
    assert sum(labels[ref]["source"] == "feedback" for ref in sent["item_ref"]) == 200  # corrections, confirmations
    [evaluation] = lakehouse.records("model_evaluations", {"use_case": spec.name, "model_version": "2"})
    gate = {r["rule"]: r for r in json.loads(evaluation["gate_details"])}
    assert gate["not_worse_on_new_items"]["passed"], gate  # judged on test items that arrived with the drift
    before = headline(spec, store.load(store.version_uri(spec.name, "1")), held_out)
    after = headline(spec, store.load(store.version_uri(spec.name, "2")), held_out)
    assert after > before + 0.3, (before, after)  # the retrained champion learned the new regime from feedback


def test_feedback_command_records_rejects_with_reasons_and_names_bad_lines(
    lakehouse, home, widgets_dir, monkeypatch, capsys, tmp_path
):
    from ontos_pipeline.cli import main

    monkeypatch.setenv("ONTOS_HOME", str(home))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(widgets_dir))
    assert (
        main(["feedback", "widgets", "--item-ref", "W1", "--rating", "down", "--correction", "not_ok", "--by", "rita"])
        == 0
    )
    assert "(seq 1, item W1): accepted" in capsys.readouterr().out
    assert main(["feedback", "widgets", "--request-id", "nope", "--rating", "up"]) == 1
    assert "REJECTED: unknown request_id 'nope'" in capsys.readouterr().out
    bad = tmp_path / "fb.jsonl"
    bad.write_text('{"item_ref": "W2", "rating": "down", "correction": "ok"}\n{not json\n')
    assert main(["feedback", "widgets", "--file", str(bad)]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    rows = sorted(lakehouse.records(FEEDBACK), key=lambda r: r["seq"])
    assert [(r["item_ref"], r["status"], r["author"], r["correction"]) for r in rows] == [
        ("W1", "new", "rita", '"not_ok"'),
        (None, "rejected", rows[1]["author"], None),
    ]  # the bad file wrote nothing
