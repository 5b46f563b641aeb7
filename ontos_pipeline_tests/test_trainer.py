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
from ontos_pipeline.train.trainer.extraction import parse_date
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
    from ontos_pipeline.train.evaluation import Difference

    gate = GateSpec("macro_f1", 0.6)
    assert promotion_gate(gate, 0.70, 0.30, None).passed
    assert not promotion_gate(gate, 0.55, 0.30, None).passed  # below the minimum
    assert not promotion_gate(gate, 0.70, 0.70, None).passed  # ties the baseline: does not beat it
    noisy = Difference(0.70, 0.715, -0.04, 0.01, 80)  # worse, but the interval holds zero: noise
    assert promotion_gate(gate, 0.70, 0.30, noisy).passed
    worse = Difference(0.70, 0.73, -0.05, -0.004, 80)  # small but beyond noise: a fixed tolerance let these through
    result = promotion_gate(gate, 0.70, 0.30, worse)
    assert not result.passed and "champion 0.7300" in result.summary() and "[-0.0500, -0.0040]" in result.summary()
    [rule] = [r for r in result.rules if not r.passed]
    assert rule.numbers["difference"] == pytest.approx(-0.03) and rule.numbers["difference_ci_high"] == -0.004
    # lower is better: a positive difference interval is worse
    assert promotion_gate(GateSpec("mae", 10.0), 8.0, 12.0, Difference(8.0, 7.5, -0.2, 1.1, 50)).passed
    assert not promotion_gate(GateSpec("mae", 10.0), 8.0, 12.0, Difference(8.0, 7.5, 0.1, 0.9, 50)).passed
    # on the items new since the champion, the same rule on its own
    new = promotion_gate(gate, 0.70, 0.30, noisy, on_new=Difference(0.60, 0.66, -0.09, -0.02, 17))
    assert not new.passed and [r.rule for r in new.rules if not r.passed] == ["not_worse_on_new_items"]
    assert "on 17 test items new since the champion" in new.summary()


def test_the_paired_interval_separates_a_consistent_loss_from_noise():
    import numpy as np

    from ontos_pipeline.train.evaluation import paired_difference
    from ontos_pipeline.train.trainer.models import Prediction

    truths = ["a", "b"] * 100
    champion = Prediction(list(truths), np.ones(200), None, ["a", "b"])
    worse = list(truths)
    for i in range(0, 200, 20):  # wrong on 10 rows the champion gets right: 5 points, every resample sees it
        worse[i] = "b" if worse[i] == "a" else "a"
    d = paired_difference("enum", truths, Prediction(worse, np.ones(200), None, ["a", "b"]), champion, {}, "accuracy")
    assert d.value == pytest.approx(-0.05) and d.high < 0 and d.worse_beyond_noise(True)
    swapped = list(worse)  # as many rows gained as lost: no clear difference either way
    for i in range(0, 200, 40):
        swapped[i], swapped[i + 5] = truths[i], "b" if truths[i + 5] == "a" else "a"
    mixed = Prediction(swapped, np.ones(200), None, ["a", "b"])
    d2 = paired_difference("enum", truths, mixed, Prediction(worse, np.ones(200), None, ["a", "b"]), {}, "accuracy")
    assert (
        d2.value == 0 and d2.low < 0 < d2.high and not d2.worse_beyond_noise(True) and not d2.better_beyond_noise(True)
    )


def test_items_from_feedback_weigh_more_in_training():
    import pandas as pd

    from ontos_pipeline.train.training_data import weight_items

    frame = pd.DataFrame({"item_ref": ["a", "b", "c"], "response": ["x", "y", "z"]})
    weighted = weight_items(frame, {"b"}, 3)
    assert weighted["item_ref"].tolist() == ["a", "b", "c", "b", "b"]
    assert weight_items(frame, {"b"}, 1) is frame and weight_items(frame, set(), 3) is frame


def test_thumbs_up_confirmations_make_at_most_their_share_of_the_train_rows():
    import pandas as pd

    from ontos_pipeline.train.training_data import cap_confirmations

    frame = pd.DataFrame({"item_ref": [f"i{k:03d}" for k in range(100)], "response": ["x"] * 100})
    confirmed = frozenset(f"i{k:03d}" for k in range(70))  # 70 confirmations, 30 other labels
    capped = cap_confirmations(frame, confirmed, 0.25)
    kept = capped["item_ref"].isin(confirmed)
    assert int(kept.sum()) == 10 and int((~kept).sum()) == 30  # 10 of 40 rows: 25%
    assert capped.equals(cap_confirmations(frame, confirmed, 0.25))  # the same ones on a rebuild
    assert cap_confirmations(frame, frozenset(["i000"]), 0.25) is frame  # under the share: untouched
    assert cap_confirmations(frame, confirmed, 1.0) is frame


def test_optuna_search_is_seeded_and_logs_importances(tmp_path):
    spec, template = kind_spec(tmp_path, "number", search_trials=6)
    data = TrainingData(items("number", 300, 1), items("number", 100, 2))
    first = LocalTrainer(seed=3).train(spec, template, data)
    second = LocalTrainer(seed=3).train(spec, template, data)
    assert first.search["trials"] == 6 and first.search["best_params"] == second.search["best_params"]
    assert set(first.search["importances"]) <= set(first.search["best_params"])
    assert any(c.family.endswith("_tuned") for c in first.candidates)
    assert {"alpha", "prompt_tfidf"} <= set(first.search["best_params"])  # the search overrides the default grid


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


def test_amounts_read_the_usual_way_until_examples_teach_another_layout():
    from ontos_pipeline.train.trainer.layouts import NumberLayouts

    assert [v for v, *_ in NumberLayouts().spans("Total $1,234.50, 12 items")] == [1234.5, 12.0]
    learned = NumberLayouts().fit(["Summe: 1.234,56 EUR", "Betrag 20,10"], [[1234.56], [20.1]])
    assert [v for v, *_ in learned.spans("Summe: 2.000,75 EUR; Betrag 3,50")] == [2000.75, 3.5]
    assert [v for v, *_ in learned.spans("$1,234.50")] == [1234.5]  # a layout it learned nothing about: as usual


def test_a_date_layout_unknown_to_the_built_in_formats_is_learned_from_examples():
    from ontos_pipeline.train.trainer.layouts import DateLayouts

    text = "ref=DX-1; issued=14-MAR-2025; expires=13-MAR-2028"
    assert DateLayouts().spans(text, parse_date) == []  # "14-MAR-2025" is no built-in format
    learned = DateLayouts().fit([text], [["2025-03-14", "2028-03-13"]])
    assert [v for v, *_ in learned.spans("issued=02-JAN-2024; expires=01-JAN-2027", parse_date)] == [
        "2024-01-02",
        "2027-01-01",
    ]
    # the built-in formats still read, and overlapping spans do not hide a date
    assert [v for v, *_ in learned.spans("No. 12 4 March 2024 and 05.03.2024", parse_date)] == [
        "2024-03-04",
        "2024-03-05",
    ]
    # an ambiguous layout takes the reading its examples showed (day first here)
    day_first = DateLayouts().fit(["on 05/03/2024", "on 17/04/2024"], [["2024-03-05"], ["2024-04-17"]])
    assert [v for v, *_ in day_first.spans("on 06/02/2025", parse_date)] == ["2025-02-06"]


def _use_case(tmp_path, name: str, columns: dict, prompt: str, schema: dict, training: str = ""):
    """A one-source use case: `columns` maps name -> (type, category); item_ref is added."""
    import json

    from ontos_pipeline.generate.template import compile_template
    from ontos_pipeline.specs import load_use_case

    source = "".join(f"\n        {c}: {t}" for c, (t, _) in columns.items())
    sheet = "".join(
        f"\n    - {{name: {c}, from: items.{c}, type: {t}, category: {cat}}}" for c, (t, cat) in columns.items()
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""name: {name}
sheet:
  primary: items
  sources:
    items:
      table: shop.{name}
      columns:
        item_ref: string{source}
  columns:
    - {{name: item_ref, from: items.item_ref, type: string, category: metadata, nullable: false}}{sheet}
labels: {{label_type: {name}_label}}
template:
  name: {name}_template
  system_prompt: Answer as asked.
  prompt: {json.dumps(prompt)}
  response_schema: {json.dumps(schema)}
{training}""",
        encoding="utf-8",
    )
    spec = load_use_case(path)
    return spec, compile_template(spec)


def _heteroscedastic(n: int, seed: int) -> pd.DataFrame:
    """Number items whose noise depends on the colour: tiny for blue, large for red."""
    frame = items("number", n, seed)
    rng = np.random.default_rng(seed + 100)
    red = (frame["color"] == "red").to_numpy()
    noise = np.where(red, rng.normal(0, 30, n), rng.normal(0, 1, n))
    frame[RESPONSE] = (100 + 40 * frame["x"] + 60 * red + noise).round(2).tolist()
    return frame


def test_number_confidence_is_per_row_and_higher_where_errors_are_smaller(tmp_path):
    spec, template = kind_spec(tmp_path, "number")
    outcome = LocalTrainer(seed=1).train(
        spec, template, TrainingData(_heteroscedastic(500, 1), _heteroscedastic(200, 2))
    )
    test = _heteroscedastic(600, 3)
    p = outcome.best.model.predict_frame(test.drop(columns=[RESPONSE]))
    confidence = np.asarray(p.confidence)
    error = np.abs(np.asarray(p.responses) - test[RESPONSE].to_numpy())
    within = error <= outcome.best.model.predictor.tolerance
    assert len(np.unique(confidence.round(6))) > 2 and confidence.std() > 0.02, confidence
    order = np.argsort(-confidence, kind="stable")
    confident, other = order[: len(order) // 2], order[len(order) // 2 :]
    assert error[confident].mean() < 0.7 * error[other].mean(), (error[confident].mean(), error[other].mean())
    red = (test["color"] == "red").to_numpy()
    assert confidence[red].mean() < confidence[~red].mean() - 0.05
    # calibrated: the mean confidence is the share of rows within tolerance, per colour too
    assert abs(confidence.mean() - within.mean()) < 0.06
    assert abs(confidence[red].mean() - within[red].mean()) < 0.1
    assert outcome.baseline.model.predict_frame(test).confidence.std() == 0.0  # the baseline has no spread model


def test_the_prompt_tfidf_is_used_only_where_it_carries_signal(tmp_path):
    """Linear families keep the prompt's TF-IDF when the prompt carries what the feature columns miss, and drop it
    when it only repeats them as noisy number tokens; the choice is in the candidate's params."""
    rng = np.random.default_rng(0)
    columns = {"x": ("double", "numeric"), "code": ("string", "metadata")}
    spec, template = _use_case(
        tmp_path, "coded", columns, "Unit {{ code }} reads {{ x }}.", {"type": "string", "enum": ["keep", "drop"]}
    )

    def coded(n: int) -> pd.DataFrame:  # the answer follows the unit code, which only the prompt shows
        code = rng.choice([f"K{i}" for i in range(8)], n)
        answer = np.where(np.isin(code, ["K1", "K3", "K4", "K6"]), "keep", "drop")
        return pd.DataFrame({"item_ref": range(n), "x": rng.normal(0, 1, n).round(1), "code": code, RESPONSE: answer})

    outcome = LocalTrainer().train(spec, template, TrainingData(coded(300), coded(100)))
    logistic = next(c for c in outcome.candidates if c.family == "logistic")
    assert logistic.params["prompt_tfidf"] is True and logistic.headline > 0.95

    columns = {"x": ("double", "numeric"), "lot": ("integer", "metadata"), "bin": ("integer", "metadata")}
    prompt = "x: {{ x }}, lot {{ lot }}, bin {{ bin }}"
    spec, template = _use_case(tmp_path, "measured", columns, prompt, {"type": "number"})

    def measured(n: int) -> pd.DataFrame:  # linear in x; the prompt adds x as tokens and lot/bin numbers, all noise
        x = rng.normal(0, 1, n).round(1)
        return pd.DataFrame(
            {
                "item_ref": range(n),
                "x": x,
                "lot": rng.integers(0, 40, n),
                "bin": rng.integers(0, 40, n),
                RESPONSE: (50 * x + rng.normal(0, 20, n)).tolist(),
            }
        )

    outcome = LocalTrainer().train(spec, template, TrainingData(measured(150), measured(150)))
    ridge = next(c for c in outcome.candidates if c.family == "ridge")
    assert ridge.params["prompt_tfidf"] is False, ridge


def test_regularization_is_picked_on_validation(tmp_path):
    """Few rows and many useless columns: the default grid regularizes harder than alpha=1 and scores better."""
    rng = np.random.default_rng(4)
    columns = {f"c{i}": ("double", "numeric") for i in range(30)}
    spec, template = _use_case(tmp_path, "wide", columns, "A wide row.", {"type": "number"})

    def wide(n: int) -> pd.DataFrame:
        frame = pd.DataFrame(rng.normal(0, 1, (n, 30)), columns=list(columns))
        frame[RESPONSE] = (10 * frame["c0"] + rng.normal(0, 10, n)).tolist()
        return frame.assign(item_ref=range(n))

    train, val, test = wide(40), wide(100), wide(400)
    outcome = LocalTrainer().train(spec, template, TrainingData(train, val))
    ridge = next(c for c in outcome.candidates if c.family == "ridge")
    assert ridge.params["alpha"] > 1.0, ridge.params
    from ontos_pipeline.train.trainer.models import fit_family

    predictor = ridge.model.predictor
    default = fit_family(
        "number", "ridge", template, ridge.model.columns, predictor.features, *_prompted(ridge.model, train), {}, 0
    )
    truths = test[RESPONSE].tolist()
    tuned_r2 = score("number", truths, ridge.model.predict_frame(test), template.response_schema)["r2"]
    default_r2 = score("number", truths, default.predict_frame(test), template.response_schema)["r2"]
    assert tuned_r2 > default_r2 + 0.02, (tuned_r2, default_r2)


def _prompted(model, frame: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    from ontos_pipeline.train.trainer.models import with_prompt

    return with_prompt(model.template, model.columns, frame), frame[RESPONSE].tolist()


def _png(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_are_read_from_paths_and_inline_content_at_the_specs_size(tmp_path):
    import base64
    import pickle

    from ontos_pipeline.train.trainer.features import image_pixels

    spec, template = _use_case(
        tmp_path,
        "pictures",
        {"photo": ("string", "image")},
        "Which colour is the photo?",
        {"type": "string", "enum": ["red", "blue"]},
        "training: {image_size: 4}\n",
    )
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    (tmp_path / "red.png").write_bytes(_png(colors["red"]))
    encoded = {c: base64.b64encode(_png(rgb)).decode() for c, rgb in colors.items()}
    cells = {
        "red": [str(tmp_path / "red.png"), "data:image/png;base64," + encoded["red"], encoded["red"]],
        "blue": ["data:image/png;base64," + encoded["blue"], encoded["blue"]],
    }
    pixels = image_pixels(cells["red"], 4)
    assert pixels.shape == (3, 4 * 4 * 3 + 1) and (pixels == pixels[0]).all() and pixels[0, -1] == 0.0
    assert np.allclose(pixels[0, 0:3], np.array(colors["red"]) / 255, atol=0.01)
    assert image_pixels([None, "no/such.png", "data:image/png;base64,AAAA"], 4)[:, -1].tolist() == [1.0, 1.0, 1.0]

    rng = np.random.default_rng(0)

    def photos(n: int) -> pd.DataFrame:
        answer = rng.choice(["red", "blue"], n)
        photo = [cells[a][int(rng.integers(len(cells[a])))] for a in answer]
        return pd.DataFrame({"item_ref": range(n), "photo": photo, RESPONSE: answer})

    outcome = LocalTrainer().train(spec, template, TrainingData(photos(40), photos(20)))
    restored = pickle.loads(pickle.dumps(outcome.best.model))
    assert restored.predictor.features.image_size == 4
    test = photos(30)
    answers = restored.predict(test.drop(columns=[RESPONSE]))
    assert [a["response"] for a in answers] == test[RESPONSE].tolist()


def _clipped(n: int, seed: int) -> pd.DataFrame:
    """The number kind shifted down so that about a third of the true values fall below the schema's minimum (0)
    and are recorded as 0, as a source that clips its readings does."""
    frame = items("number", n, seed)
    frame[RESPONSE] = [max(0.0, round(v - 120, 2)) for v in frame[RESPONSE]]
    return frame


def test_a_linear_number_model_is_not_pulled_by_targets_clipped_at_the_bound(tmp_path, monkeypatch):
    from ontos_pipeline.train.trainer import models

    spec, template = kind_spec(tmp_path, "number")
    train, val, test = _clipped(400, 1), _clipped(150, 2), _clipped(600, 3)
    assert 0.25 < (train[RESPONSE] == 0).mean() < 0.5

    def ridge_error(rounds: int) -> float:
        monkeypatch.setattr(models, "CENSORED_ROUNDS", rounds)
        outcome = LocalTrainer(seed=1).train(spec, template, TrainingData(train, val))
        ridge = next(c for c in outcome.candidates if c.family == "ridge")
        predicted = np.asarray(ridge.model.predict_frame(test.drop(columns=[RESPONSE])).responses)
        return float(np.abs(predicted - test[RESPONSE].to_numpy()).mean())

    censored, plain = ridge_error(models.CENSORED_ROUNDS), ridge_error(0)
    assert censored < 0.7 * plain, (censored, plain)
