"""The local trainer learns each response kind where the right answer is known, and beats its baseline.

Pure tests (no Spark): items are generated with a known rule plus a little label noise, the trainer fits the
baseline and the model families, and the winner is checked on fresh rows.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from ontos_pipeline.train.evaluation import evaluate, promotion_gate
from ontos_pipeline.train.trainer.extraction import parse_date, parse_number
from ontos_pipeline.train.trainer.local import RESPONSE, LocalTrainer, TrainingData
from ontos_pipeline.train.trainer.scoring import score
from ontos_pipeline_tests.kinds import GATES, items, kind_spec


@pytest.mark.parametrize(("kind", "minimum"), [("enum", 0.85), ("number", 0.9), ("object", 0.9), ("text", 0.85)])
def test_each_response_kind_learns_the_rule_and_beats_its_baseline(tmp_path, kind, minimum):
    spec, template = kind_spec(tmp_path, kind)
    outcome = LocalTrainer(seed=1).train(spec, template, TrainingData(items(kind, 400, 1), items(kind, 120, 2)))
    assert outcome.candidates[0].family == "baseline"
    assert outcome.best.family != "baseline"

    test = items(kind, 200, 3, noise=0.0)  # clean answers: the model must have learned the rule itself
    p = outcome.best.model.predict_frame(test.drop(columns=[RESPONSE]))
    metric = GATES[kind]
    model = score(kind, test[RESPONSE].tolist(), p, template.response_schema)[metric]
    baseline = score(
        kind, test[RESPONSE].tolist(), outcome.baseline.model.predict_frame(test), template.response_schema
    )[metric]
    assert model >= minimum, (kind, model, outcome.candidates)
    assert model - baseline >= 0.3, (kind, model, baseline)
    for response, confidence in zip(p.responses, p.confidence, strict=True):
        jsonschema.validate(response, template.response_schema)
        assert 0.0 <= confidence <= 1.0


def test_predictions_come_from_the_item_columns_not_from_a_prompt(tmp_path):
    spec, template = kind_spec(tmp_path, "enum")
    outcome = LocalTrainer().train(spec, template, TrainingData(items("enum", 300, 1), items("enum", 100, 2)))
    model = outcome.best.model
    assert model.input_columns == ["color", "note", "x"]
    answers = model.predict(
        pd.DataFrame(
            {
                "x": [-2.0, 0.0, 2.0],
                "color": ["red", "blue", None],
                "note": ["Routine reading.", None, "Checked twice."],
            }
        )
    )
    assert [a["response"] for a in answers] == ["low", "mid", "high"]
    with pytest.raises(ValueError, match="missing input columns: x"):
        model.predict(pd.DataFrame({"color": ["red"], "note": ["n"]}))


def test_training_on_shuffled_labels_cannot_pass_the_gate(tmp_path):
    """A deliberately useless model (labels carry no signal) does not beat its baseline on the test rows."""
    spec, template = kind_spec(tmp_path, "enum")
    train, val = items("enum", 400, 1), items("enum", 120, 2)
    rng = np.random.default_rng(0)
    for frame in (train, val):
        frame[RESPONSE] = rng.choice(["low", "mid", "high"], len(frame), p=[0.2, 0.6, 0.2])
    outcome = LocalTrainer().train(spec, template, TrainingData(train, val))
    test = items("enum", 300, 3)
    test[RESPONSE] = rng.choice(["low", "mid", "high"], len(test), p=[0.2, 0.6, 0.2])
    result = evaluate(spec, test, outcome.best.model, outcome.baseline.model, None, None, tmp_path / "plots")
    assert not result.gate.passed
    failed = {r.rule for r in result.gate.rules if not r.passed}
    assert failed & {"beats_baseline", "meets_minimum"}, result.gate.summary()


def test_evaluation_reports_intervals_slices_failures_plots_and_the_champion(tmp_path):
    spec, template = kind_spec(tmp_path, "enum")
    trainer = LocalTrainer()
    strong = trainer.train(spec, template, TrainingData(items("enum", 400, 1), items("enum", 100, 2)))
    weak_train = items("enum", 40, 5, noise=0.5)
    weak = trainer.train(spec, template, TrainingData(weak_train, items("enum", 40, 6, noise=0.5)))
    test = items("enum", 300, 3)
    result = evaluate(spec, test, strong.best.model, strong.baseline.model, weak.best.model, "1", tmp_path / "plots")
    low, high = result.challenger["ci"]
    assert low <= result.challenger["headline"] <= high and high - low < 0.2
    assert result.champion is not None and result.champion["headline"] < result.challenger["headline"]
    assert [r.rule for r in result.gate.rules] == ["beats_baseline", "meets_minimum", "not_worse_than_champion"]
    assert result.gate.passed
    assert result.slices and {s["column"] for s in result.slices} <= {"x", "color"}
    assert result.slices == sorted(result.slices, key=lambda s: s["delta"])
    assert result.failures and all(f["expected"] != f["predicted"] for f in result.failures)
    assert set(result.plots) == {"confusion_matrix", "calibration"}
    for path in result.plots.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("accuracy", "macro_f1", "per_class", "roc_auc", "pr_auc", "ece", "confusion_matrix"):
        assert key in result.challenger


def test_gate_rules_use_the_specs_numbers():
    from ontos_pipeline.specs import GateSpec

    gate = GateSpec("macro_f1", 0.6, 0.02)
    assert promotion_gate(gate, 0.70, 0.30, None).passed
    assert not promotion_gate(gate, 0.55, 0.30, None).passed  # below the minimum
    assert not promotion_gate(gate, 0.70, 0.70, None).passed  # ties the baseline: does not beat it
    assert promotion_gate(gate, 0.70, 0.30, 0.715).passed  # worse than the champion, within tolerance
    result = promotion_gate(gate, 0.70, 0.30, 0.73)
    assert not result.passed and "champion 0.7300" in result.summary()
    mae = promotion_gate(GateSpec("mae", 10.0, 1.0), 8.0, 12.0, 7.5)  # lower is better
    assert mae.passed
    assert not promotion_gate(GateSpec("mae", 10.0, 1.0), 8.0, 12.0, 6.5).passed
    # on items new since the champion there is no tolerance: a retrain must not lose where the data moved
    new = promotion_gate(gate, 0.70, 0.30, 0.71, on_new=(0.60, 0.61, 17))
    assert not new.passed and [r.rule for r in new.rules if not r.passed] == ["not_worse_on_new_items"]
    assert "0.6000 vs champion 0.6100 on 17 test items new since the champion" in new.summary()
    assert promotion_gate(gate, 0.70, 0.30, 0.71, on_new=(0.61, 0.61, 17)).passed
    assert not promotion_gate(GateSpec("mae", 10.0, 1.0), 8.0, 12.0, 8.0, on_new=(9.0, 8.9, 12)).passed


def test_items_from_feedback_weigh_more_in_training():
    import pandas as pd

    from ontos_pipeline.train.training_data import weight_items

    frame = pd.DataFrame({"item_ref": ["a", "b", "c"], "response": ["x", "y", "z"]})
    weighted = weight_items(frame, {"b"}, 3)
    assert weighted["item_ref"].tolist() == ["a", "b", "c", "b", "b"]
    assert weight_items(frame, {"b"}, 1) is frame and weight_items(frame, set(), 3) is frame


def test_optuna_search_is_seeded_and_logs_importances(tmp_path):
    spec, template = kind_spec(tmp_path, "number", search_trials=6)
    data = TrainingData(items("number", 300, 1), items("number", 100, 2))
    first = LocalTrainer(seed=3).train(spec, template, data)
    second = LocalTrainer(seed=3).train(spec, template, data)
    assert first.search["trials"] == 6 and first.search["best_params"] == second.search["best_params"]
    assert set(first.search["importances"]) <= set(first.search["best_params"])
    assert any(c.family.endswith("_tuned") for c in first.candidates)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-03-05", "2024-03-05"),
        ("5 March 2024", "2024-03-05"),
        ("March 5, 2024", "2024-03-05"),
        ("5 Mar 2024", "2024-03-05"),
        ("03/05/2024", "2024-03-05"),
        ("05.03.2024", "2024-03-05"),
        ("31/02/2024", None),
    ],
)
def test_dates_are_normalised_to_iso(text, iso):
    assert parse_date(text) == iso


def test_amounts_are_parsed():
    assert parse_number("$1,234.50") == 1234.5 and parse_number("12") == 12.0 and parse_number("$") is None
