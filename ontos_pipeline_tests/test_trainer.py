"""The local trainer learns each response kind where the right answer is known, and beats its baseline.

Pure tests (no Spark): items are generated with a known rule plus a little label noise, the trainer fits the
baseline and the model families, and the winner is checked on fresh rows.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from ontos_pipeline.specs import load_use_case
from ontos_pipeline.stages.evaluation import evaluate, promotion_gate
from ontos_pipeline.stages.template import compile_template
from ontos_pipeline.trainer.extraction import parse_date, parse_number
from ontos_pipeline.trainer.local import RESPONSE, LocalTrainer, TrainingData
from ontos_pipeline.trainer.scoring import score

SCHEMAS = {
    "enum": {"type": "string", "enum": ["low", "mid", "high"]},
    "number": {"type": "number", "minimum": 0, "maximum": 1000},
    "object": {"type": "object", "additionalProperties": False,
               "required": ["order_id", "ordered_on", "amount", "state"],
               "properties": {"order_id": {"type": "string", "pattern": "^ORD-[0-9]{4}$"},
                              "ordered_on": {"type": "string", "format": "date"},
                              "amount": {"type": "number", "minimum": 0},
                              "state": {"type": "string", "enum": ["open", "closed"]}}},
    "text": {"type": "string", "minLength": 3},
}
GATES = {"enum": "macro_f1", "number": "r2", "object": "field_exact_match", "text": "token_f1"}
ANSWERS = {("red", False): "Recalibrate the probe.", ("red", True): "Replace the red sensor now.",
           ("blue", False): "No action required.", ("blue", True): "Schedule a service visit next week."}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def kind_spec(tmp_path, kind: str, search_trials: int = 0):
    import json

    (tmp_path / f"{kind}.yaml").write_text(textwrap.dedent(f"""
        name: {kind}_case
        sheet:
          primary: items
          sources:
            items:
              table: shop.items
              columns: {{item_ref: string, x: double, color: string, note: string}}
          columns:
            - {{name: item_ref, from: items.item_ref, type: string, category: metadata, nullable: false}}
            - {{name: x, from: items.x, type: double, category: numeric}}
            - {{name: color, from: items.color, type: string, category: categorical, values: [red, blue]}}
            - {{name: note, from: items.note, type: string, category: text}}
        labels: {{label_type: {kind}_label}}
        template:
          name: {kind}_template
          system_prompt: Answer as asked.
          prompt: "Reading {{{{ x }}}} on the {{{{ color }}}} unit. {{{{ note }}}}"
          response_schema: {json.dumps(SCHEMAS[kind])}
        training:
          gate: {{metric: {GATES[kind]}, minimum: 0.5}}
          search: {{trials: {search_trials}}}
    """), encoding="utf-8")
    spec = load_use_case(tmp_path / f"{kind}.yaml")
    return spec, compile_template(spec)


def items(kind: str, n: int, seed: int, noise: float = 0.05) -> pd.DataFrame:
    """n items with a known answer (a share `noise` of the labels redrawn at random)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n).round(3)
    color = rng.choice(["red", "blue"], n)
    notes, responses = [], []
    for i in range(n):
        if kind == "object":
            day = int(rng.integers(1, 28))
            month = int(rng.integers(1, 13))
            order, amount = f"ORD-{rng.integers(1000, 10000)}", round(float(rng.uniform(5, 5000)), 2)
            state = ["open", "closed"][int(rng.integers(2))]
            written = [f"2024-{month:02d}-{day:02d}", f"{day} {MONTHS[month - 1]} 2024",
                       f"{month:02d}/{day:02d}/2024"][i % 3]
            other = f"ORD-{rng.integers(1000, 10000)}"
            notes.append(f"Supersedes {other} from 2023-01-0{1 + i % 9}. Order {order} placed {written}; "
                         f"shipping ${rng.uniform(1, 4):.2f}; total ${amount:,.2f}. Order is {state}.")
            responses.append({"order_id": order, "ordered_on": f"2024-{month:02d}-{day:02d}", "amount": amount,
                              "state": state})
        else:
            notes.append(["Routine reading.", "Checked twice.", "Night shift."][int(rng.integers(3))])
            if kind == "enum":
                responses.append("low" if x[i] < -0.5 else "high" if x[i] > 0.5 else "mid")
            elif kind == "number":
                responses.append(round(float(100 + 40 * x[i] + (60 if color[i] == "red" else 0)
                                             + rng.normal(0, 5)), 2))
            else:
                responses.append(ANSWERS[(color[i], bool(x[i] > 0))])
    frame = pd.DataFrame({"item_ref": [f"I{seed}-{i:04d}" for i in range(n)], "x": x, "color": color,
                          "note": notes, RESPONSE: responses})
    if kind in ("enum", "text"):  # label noise: a few answers redrawn from the answer set
        pool = sorted({str(r) for r in responses})
        flip = rng.random(n) < noise
        frame.loc[flip, RESPONSE] = rng.choice(pool, int(flip.sum()))
    return frame


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
    baseline = score(kind, test[RESPONSE].tolist(), outcome.baseline.model.predict_frame(test),
                     template.response_schema)[metric]
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
    answers = model.predict(pd.DataFrame({"x": [-2.0, 0.0, 2.0], "color": ["red", "blue", None],
                                          "note": ["Routine reading.", None, "Checked twice."]}))
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
    result = evaluate(spec, test, strong.best.model, strong.baseline.model, weak.best.model, "1",
                      tmp_path / "plots")
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


def test_optuna_search_is_seeded_and_logs_importances(tmp_path):
    spec, template = kind_spec(tmp_path, "number", search_trials=6)
    data = TrainingData(items("number", 300, 1), items("number", 100, 2))
    first = LocalTrainer(seed=3).train(spec, template, data)
    second = LocalTrainer(seed=3).train(spec, template, data)
    assert first.search["trials"] == 6 and first.search["best_params"] == second.search["best_params"]
    assert set(first.search["importances"]) <= set(first.search["best_params"])
    assert any(c.family.endswith("_tuned") for c in first.candidates)


@pytest.mark.parametrize(("text", "iso"), [("2024-03-05", "2024-03-05"), ("5 March 2024", "2024-03-05"),
                                           ("March 5, 2024", "2024-03-05"), ("5 Mar 2024", "2024-03-05"),
                                           ("03/05/2024", "2024-03-05"), ("05.03.2024", "2024-03-05"),
                                           ("31/02/2024", None)])
def test_dates_are_normalised_to_iso(text, iso):
    assert parse_date(text) == iso


def test_amounts_are_parsed():
    assert parse_number("$1,234.50") == 1234.5 and parse_number("12") == 12.0 and parse_number("$") is None
