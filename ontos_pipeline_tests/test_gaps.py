"""Gap reports and annotation tasks on real Spark, Delta tables and a real registered model: planted weak slice,
rare class, drifted input, low-confidence region and repeated negative feedback are found with their numbers; tasks
pick the least confident unlabelled or disputed items; re-runs duplicate nothing; the task lifecycle and its CLI."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest

from ontos_pipeline.cli import tasks as cli_tasks
from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.improve import gaps, tasks
from ontos_pipeline.monitor.monitoring import REPORTS, Window, monitor
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.model_store import CHAMPION, local_store
from ontos_pipeline.train.evaluation import evaluate, log_evaluation, record_evaluation
from ontos_pipeline.train.tracking import log_pyfunc, number_types
from ontos_pipeline.train.trainer.local import RESPONSE, LocalTrainer, TrainingData
from ontos_pipeline_tests.kinds import items, kind_spec

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
SHEET = "sheet_enum_case_test"


def _blue_noisy(n: int, seed: int) -> pd.DataFrame:
    """Items whose blue answers are mostly redrawn at random: a model trained on them is unsure on blue items."""
    frame = items("enum", n, seed)
    rng = np.random.default_rng(seed)
    redraw = (frame["color"] == "blue") & (rng.random(n) < 0.6)
    frame.loc[redraw, RESPONSE] = rng.choice(["low", "mid", "high"], int(redraw.sum()))
    return frame


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An enum use case whose registry holds a trained model (champion, unsure on blue items) and its baseline."""
    root = tmp_path_factory.mktemp("gaps")
    cases = root / "use_cases"
    cases.mkdir()
    spec, template = kind_spec(cases, "enum")
    outcome = LocalTrainer(seed=1).train(spec, template, TrainingData(_blue_noisy(300, 1), _blue_noisy(80, 2)))
    store = local_store(root / "home")
    store.activate()
    with mlflow.start_run(experiment_id=store.experiment_id(spec.name)):
        info = log_pyfunc(
            store,
            outcome.best.model,
            items("enum", 5, 3).drop(columns=[RESPONSE]),
            store.model_name(spec.name),
            number_types(spec),
        )
    store.set_alias(spec.name, CHAMPION, str(info.registered_model_version))
    return {
        "spec": spec,
        "store": store,
        "model": outcome.best.model,
        "baseline": outcome.baseline.model,
        "cases": cases,
        "root": root,
    }


def _sheet(spark, lakehouse: LocalLakehouse, frame: pd.DataFrame) -> None:
    lakehouse.write(SHEET, spark.createDataFrame(frame.drop(columns=[RESPONSE], errors="ignore")))


def _labels(lakehouse: LocalLakehouse, spec, labels: dict[str, str], prohibited: set[str] = frozenset()) -> None:
    lakehouse.append_records(
        "canonical_labels",
        [
            {
                "label_id": f"L{ref}",
                "sheet_id": spec.name,
                "item_ref": ref,
                "label_type": spec.labels.label_type,
                "label_data": json.dumps(value),
                "confidence": 1.0,
                "source": "import",
                "version": 1,
                "prohibited_uses": ["training"] if ref in prohibited else None,
                "created_at": T0,
            }
            for ref, value in labels.items()
        ],
    )


def _conflict(lakehouse: LocalLakehouse, spec, ref: str) -> None:
    lakehouse.append_records(
        "label_conflicts",
        [
            {
                "sheet_id": spec.name,
                "item_ref": ref,
                "label_type": spec.labels.label_type,
                "label_ids": ["a", "b"],
                "label_values": '["\\"low\\"", "\\"high\\""]',
                "status": "open",
                "detected_at": T0,
            }
        ],
    )


def _confidence(model, frame: pd.DataFrame) -> pd.Series:
    answers = model.predict(frame[model.input_columns])
    return pd.Series([a["confidence"] for a in answers], index=frame["item_ref"])


def test_weak_slice_from_the_stored_evaluation_has_hand_computed_numbers(spark, lakehouse, world, tmp_path):
    spec, store, model = world["spec"], world["store"], world["model"]
    test = items("enum", 200, 5, noise=0.0)
    rng = np.random.default_rng(0)
    blue = test["color"] == "blue"
    flip = blue & (rng.random(len(test)) < 0.5)  # planted: half of the blue truths are wrong answers
    test.loc[flip, RESPONSE] = test.loc[flip, RESPONSE].map({"low": "high", "mid": "low", "high": "mid"})
    evaluation = evaluate(spec, test, model, world["baseline"], None, None, tmp_path / "plots")
    champion = store.version(spec.name, CHAMPION)
    record_evaluation(lakehouse, evaluation, store.model_name(spec.name), champion.version, champion.run_id, None)
    log_evaluation(store, champion.run_id, evaluation, tmp_path / "plots")

    loaded = gaps.latest_evaluation(spark, lakehouse, store, spec.name)
    assert (loaded.role, loaded.model_version, loaded.rows) == ("champion", str(champion.version), 200)
    found = {g.subject: g for g in gaps.worst_slice_gaps(spec, loaded)}
    correct = np.array([p == t for p, t in zip(model.predict_frame(test).responses, test[RESPONSE], strict=True)])
    assert "color=blue" in found and "color=red" not in found
    evidence = found["color=blue"].evidence
    assert evidence["support"] == int(blue.sum())
    assert evidence["slice_score"] == pytest.approx(correct[blue.to_numpy()].mean())
    assert evidence["overall_score"] == pytest.approx(correct.mean())
    assert evidence["delta"] == pytest.approx(correct[blue.to_numpy()].mean() - correct.mean())
    assert evidence["delta"] <= -gaps.WORST_SLICE_DELTA
    assert found["color=blue"].region == {"column": "color", "value": "blue"}


def test_rare_class_is_low_support_counting_only_usable_training_labels(spark, lakehouse, world):
    spec = world["spec"]
    values = ["low"] * 60 + ["mid"] * 37 + ["high"] * 5
    labels = {f"R{i:03d}": v for i, v in enumerate(values)}
    _labels(lakehouse, spec, labels, prohibited={"R097", "R098"})  # two "high" labels may not be used for training
    _conflict(lakehouse, spec, "R099")  # and one is disputed
    found = {g.subject: g for g in gaps.low_support_gaps(spark, lakehouse, spec)}
    assert set(found) == {"answer=high"}
    evidence = found["answer=high"].evidence
    assert (evidence["labels"], evidence["training_labels"]) == (2, 99)
    assert evidence["share"] == pytest.approx(2 / 99) and evidence["even_share"] == pytest.approx(1 / 3)
    assert found["answer=high"].severity == "high" and found["answer=high"].region == {"response": '"high"'}


def test_low_confidence_region_and_tasks_take_the_least_confident_unlabelled_items_first(spark, lakehouse, world):
    spec, model = world["spec"], world["model"]
    frame = items("enum", 160, 6)  # planted: the model learnt from noisy blue labels, so blue items are uncertain
    _sheet(spark, lakehouse, frame)
    labelled = frame["item_ref"].iloc[:40].tolist()
    _labels(lakehouse, spec, dict.fromkeys(labelled, "mid"))
    disputed = labelled[0]
    _conflict(lakehouse, spec, disputed)

    scored = gaps.scored_candidates(spark, lakehouse, spec, SHEET, model, limit=1000)
    expected = set(frame["item_ref"]) - set(labelled) | {disputed}
    assert set(scored["item_ref"]) == expected
    assert scored.loc[scored["item_ref"] == disputed, gaps.DISPUTED].item()
    truth = _confidence(model, frame.set_index("item_ref").loc[sorted(expected)].reset_index())
    assert scored.set_index("item_ref")[gaps.CONFIDENCE].sort_index().to_numpy() == pytest.approx(
        truth.sort_index().to_numpy(), abs=1e-6
    )

    found = {g.subject: g for g in gaps.low_confidence_gaps(spec, scored, "1")}
    assert "color=blue" in found and "color=red" not in found
    blue = truth[frame.set_index("item_ref").loc[truth.index, "color"] == "blue"]
    evidence = found["color=blue"].evidence
    assert evidence["support"] == len(blue) and evidence["scored_items"] == len(expected)
    assert evidence["slice_mean_confidence"] == pytest.approx(blue.mean(), abs=1e-6)
    assert evidence["mean_confidence"] == pytest.approx(truth.mean(), abs=1e-6)
    assert evidence["slice_low_confidence_items"] == int((blue < gaps.LOW_CONFIDENCE).sum())

    gap = found["color=blue"].record("rep", T0) | {
        "evidence": json.loads(found["color=blue"].record("r", T0)["evidence"])
    }
    plan = tasks.plan_tasks(spec, [gap], scored, [], limit=10)
    chosen = plan.tasks[0]["item_refs"]
    assert len(chosen) == 10 and list(blue.loc[chosen]) == sorted(blue.loc[chosen])  # least confident first
    assert set(chosen) <= set(blue.index) and not set(chosen) & (set(labelled) - {disputed})
    assert blue.loc[chosen].max() <= blue.drop(chosen).min() + 1e-9  # nothing more uncertain was left out
    assert plan.tasks[0]["priority"] == gaps.PRIORITY[found["color=blue"].severity]


def test_drifted_input_from_a_real_monitoring_report_and_its_task_region(spark, lakehouse, world):
    spec, model = world["spec"], world["model"]
    sheet = items("enum", 200, 7)
    sheet.loc[sheet.index[:30], "x"] = np.linspace(2.2, 3.8, 30)  # some sheet items look like the drifted traffic
    _sheet(spark, lakehouse, sheet)
    served = items("enum", 150, 8)
    served["x"] = np.random.default_rng(1).normal(3.0, 0.4, len(served)).round(3)  # planted: x shifted by +3
    lakehouse.append_records(
        INFERENCE_LOG,
        [
            {
                "request_id": f"q{i}",
                "request_time": T0 + timedelta(seconds=i),
                "endpoint_name": spec.serving.endpoint_name,
                "model_version": "1",
                "inputs": json.dumps([{k: v for k, v in r.items() if k != RESPONSE}]),
                "response": json.dumps([{"response": "high", "confidence": 0.9}]),
                "latency_ms": 5.0,
                "status_code": 200,
            }
            for i, r in enumerate(served.to_dict("records"))
        ],
    )
    reference = spark.createDataFrame(items("enum", 300, 9).assign(response=lambda d: d[RESPONSE].map(json.dumps)))
    report = monitor(spark, lakehouse, spec, Window(T0, T0 + timedelta(hours=1)), reference)
    lakehouse.append_records(REPORTS, [report.record()])
    assert "x" in report.drifted and "color" not in report.drifted

    latest = gaps.latest_drift_report(lakehouse, spec.name)
    found = {g.subject: g for g in gaps.drift_gaps(spark, lakehouse, spec, latest, SHEET)}
    assert "x" in found and "color" not in found
    drift = next(d for d in report.drift if d.column == "x")
    evidence = found["x"].evidence
    assert evidence["psi"] == pytest.approx(drift.psi, abs=1e-6) and evidence["p_value"] == pytest.approx(
        drift.p_value, abs=1e-9
    )
    assert (evidence["current_rows"], evidence["report_id"]) == (150, report.report_id)
    p10, p90 = np.quantile(served["x"], [0.1, 0.9])
    assert evidence["served_p10"] == pytest.approx(p10, abs=0.05) and evidence["served_p90"] == pytest.approx(
        p90, abs=0.05
    )
    assert evidence["reference_p50"] < 1.0 < evidence["served_p50"]
    assert found["x"].region["range"] == [evidence["served_p10"], evidence["served_p90"]]

    scored = gaps.scored_candidates(spark, lakehouse, spec, SHEET, model)
    gap = {**found["x"].record("rep", T0), "evidence": {"region": found["x"].region}}
    chosen = tasks.plan_tasks(spec, [gap], scored, []).tasks[0]["item_refs"]
    x = sheet.set_index("item_ref")["x"]
    lo, hi = found["x"].region["range"]
    assert chosen and all(lo <= x[r] <= hi for r in chosen)
    assert len(chosen) == int(((x >= lo) & (x <= hi)).sum())  # fewer than a full task: all of them


def test_repeated_negative_feedback_items_and_answers(spark, lakehouse, world):
    spec = world["spec"]
    endpoint = spec.serving.endpoint_name

    def request(rid: str, ref: str, answer: str) -> dict:
        return {
            "request_id": rid,
            "request_time": T0,
            "endpoint_name": endpoint,
            "model_version": "1",
            "inputs": json.dumps([{"item_ref": ref, "x": 0.1, "color": "red", "note": "n"}]),
            "response": json.dumps([{"response": answer, "confidence": 0.7}]),
            "latency_ms": 3.0,
            "status_code": 200,
        }

    log = (
        [request("r1", "A", "mid")]
        + [request(f"h{i}", f"P{i}", "high") for i in range(10)]
        + [request(f"l{i}", f"Q{i}", "low") for i in range(10)]
    )
    lakehouse.append_records(INFERENCE_LOG, log)
    fb = [
        ("A", None, "down", None, "new"),
        ("A", None, "down", None, "new"),
        ("A", None, None, '"low"', "new"),
        (None, "r1", "down", None, "new"),
        ("A", None, "up", None, "new"),
        ("A", None, "down", None, "rejected"),
        ("B", None, "down", None, "new"),
    ]
    fb += [(f"P{i}", f"h{i}", "down" if i < 8 else "up", None, "new") for i in range(10)]
    fb += [(f"Q{i}", f"l{i}", "up", None, "new") for i in range(10)]
    lakehouse.append_records(
        "feedback",
        [
            {
                "feedback_id": f"f{i}",
                "seq": i + 1,
                "use_case": spec.name,
                "item_ref": ref,
                "request_id": rid,
                "rating": rating,
                "correction": correction,
                "status": status,
                "created_at": T0,
            }
            for i, (ref, rid, rating, correction, status) in enumerate(fb)
        ],
    )
    sheet = pd.DataFrame({"item_ref": ["A", "B"], "x": [0.1, 0.2], "color": ["red", "blue"], "note": ["n", "n"]})
    found = {g.subject: g for g in gaps.negative_feedback_gaps(spark, lakehouse, spec, spark.createDataFrame(sheet))}
    assert set(found) == {"items", "answer=high"}
    evidence = found["items"].evidence
    assert evidence["items_with_repeated_negative_feedback"] == 1
    assert evidence["items"] == [
        {"item_ref": "A", "negative": 4, "down": 3, "corrections": 1, "up": 1, "in_sheet": True}
    ]
    assert found["items"].region == {"item_refs": ["A"]}
    high = found["answer=high"].evidence
    assert (high["judged"], high["negative"]) == (10, 8) and high["negative_rate"] == pytest.approx(0.8)
    assert high["overall_negative_rate"] == pytest.approx(9 / 21)  # r1 (down) + 10 "high" + 10 "low" were judged


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_tasks.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_reruns_duplicate_nothing_and_the_task_lifecycle(spark, lakehouse, world, home, monkeypatch, capsys):
    spec, store = world["spec"], world["store"]
    frame = items("enum", 120, 11)
    _sheet(spark, lakehouse, frame)
    _labels(lakehouse, spec, {r: "low" for r in frame["item_ref"].iloc[:60]})
    version, model = gaps.scoring_model(store, spec.name, None)
    assert version == str(store.version(spec.name, CHAMPION).version)

    scored = gaps.scored_candidates(spark, lakehouse, spec, SHEET, model)

    def run(run_id: str) -> tasks.Plan:
        inputs = gaps.GapInputs(None, gaps.latest_drift_report(lakehouse, spec.name), version, scored)
        found = gaps.find_gaps(spark, lakehouse, spec, inputs, SHEET)
        gaps.record_gaps(lakehouse, spec.name, found, gaps.report_id(spec.name, run_id))
        assert {"worst_slice", "drift"} <= set(inputs.notes)  # no evaluation, no monitoring: stated, not failed
        return tasks.record_tasks(lakehouse, spec, gaps.stored_gaps(lakehouse, spec.name), scored)

    first = run("run-1")
    stored = lakehouse.records(gaps.GAPS, {"use_case": spec.name})
    assert stored and len({g["gap_id"] for g in stored}) == len(stored)
    assert {g["kind"] for g in stored} <= {"low_support", "low_confidence"}
    assert first.tasks and len(first.tasks) == len({t["gap_id"] for t in first.tasks})
    second = run("run-2")
    again = lakehouse.records(gaps.GAPS, {"use_case": spec.name})
    assert sorted(g["gap_id"] for g in again) == sorted(g["gap_id"] for g in stored)
    assert {g["report_id"] for g in again} == {gaps.report_id(spec.name, "run-2")}
    assert second.tasks == [] and set(second.skipped.values()) <= {
        "an open task exists",
        "no unlabelled or disputed item in its region",
    }
    assert len(lakehouse.records(tasks.TASKS)) == len(first.tasks)
    picked = [r for t in first.tasks for r in t["item_refs"]]
    assert len(picked) == len(set(picked)) and not set(picked) & set(frame["item_ref"].iloc[:60])

    monkeypatch.setenv("ONTOS_HOME", str(home))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(world["cases"]))
    task = first.tasks[0]
    tid = task["task_id"]
    assert _cli(["tasks", "complete", tid]) == 2
    assert f"task {tid} is pending; only in_progress tasks can become completed" in capsys.readouterr().err
    assert _cli(["tasks", "show", "Tnope"]) == 2 and "no task 'Tnope'" in capsys.readouterr().err
    assert _cli(["tasks", "show", tid]) == 0
    shown = capsys.readouterr().out
    assert task["item_refs"][0] in shown and f"ontos labels import labels.csv --use-case {spec.name}" in shown
    assert _cli(["tasks", "start", tid, "--assignee", "ann"]) == 0
    assert _cli(["tasks", "start", tid]) == 2
    assert f"task {tid} is in_progress; only pending tasks can become in_progress" in capsys.readouterr().err
    later = datetime.now(UTC) + timedelta(seconds=1)
    lakehouse.append_records(
        "canonical_labels",
        [
            {
                "label_id": f"N{r}",
                "sheet_id": spec.name,
                "item_ref": r,
                "label_type": spec.labels.label_type,
                "label_data": '"mid"',
                "source": "expert",
                "version": 1,
                "created_at": later,
            }
            for r in task["item_refs"][:2]
        ],
    )
    assert _cli(["tasks", "complete", tid[:6]]) == 0
    out = capsys.readouterr().out
    assert f"task {tid} is now completed: 2 of {len(task['item_refs'])} items have a canonical label" in out
    done = tasks.get_task(lakehouse, tid)
    assert (done["status"], done["assignee"]) == ("completed", "ann")
    assert done["started_at"] <= done["completed_at"]
    with pytest.raises(tasks.TaskError, match=f"task {tid} is completed"):
        tasks.transition(lakehouse, tid, "in_progress")
    assert _cli(["tasks", "list", spec.name, "--status", "completed"]) == 0
    assert tid in capsys.readouterr().out

    third = tasks.record_tasks(lakehouse, spec, gaps.stored_gaps(lakehouse, spec.name), scored)
    assert [t["gap_id"] for t in third.tasks] == [task["gap_id"]]  # only the completed task's gap gets a new task
    assert third.tasks[0]["task_id"] == tasks.task_id(task["gap_id"], 2) != tid


def test_a_drifted_image_statistic_selects_the_items_it_describes(tmp_path):
    """A drift gap on `photo:brightness` must find the bright images, not NaN for every path."""
    from PIL import Image

    for name, color in (("dark", (10, 10, 10)), ("bright", (250, 250, 250))):
        Image.new("RGB", (4, 6), color).save(tmp_path / f"{name}.png")
    frame = pd.DataFrame(
        {"photo": [str(tmp_path / "dark.png"), str(tmp_path / "bright.png"), None, str(tmp_path / "gone.png")]}
    )
    brightness = gaps.feature_values(frame, "photo:brightness", "numeric")
    assert brightness.round(2).tolist()[:2] == [0.04, 0.98] and brightness.isna().tolist()[2:] == [True, True]
    assert gaps.feature_values(frame, "photo:height", "numeric").tolist()[:2] == [6.0, 6.0]
    assert gaps.feature_values(frame, "photo:unreadable", "categorical").tolist() == ["false", "false", None, "true"]
