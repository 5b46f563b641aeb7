"""Evaluation metrics against hand-computed values on tiny fixtures (no Spark)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ontos_pipeline.train.metrics import (
    HIGHER_IS_BETTER,
    METRICS_BY_KIND,
    bootstrap_ci,
    calibration_png,
    classification_metrics,
    confusion_matrix_png,
    extraction_metrics,
    field_accuracy_png,
    regression_metrics,
    residuals_png,
    row_scores,
    text_metrics,
    worst_slices,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_plain_json(value) -> None:
    """Only exact Python JSON types (no numpy scalars, which json.dumps would accept for float64) and no NaN."""
    if isinstance(value, dict):
        assert all(type(key) is str for key in value), value
        for item in value.values():
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), (value, type(value))
        assert not (type(value) is float and not math.isfinite(value)), value
    json.dumps(value, allow_nan=False)


# -- constants ----------------------------------------------------------------------------------------------------
def test_every_gate_metric_has_a_direction():
    headline = {name for names in METRICS_BY_KIND.values() for name in names}
    assert set(HIGHER_IS_BETTER) == headline
    assert {name for name, higher in HIGHER_IS_BETTER.items() if not higher} == {"mae", "rmse"}
    assert METRICS_BY_KIND == {
        "enum": ("accuracy", "macro_f1"),
        "number": ("r2", "mae", "rmse"),
        "object": ("field_exact_match", "micro_f1"),
        "text": ("token_f1", "exact_match"),
    }


# -- classification -----------------------------------------------------------------------------------------------
def test_classification_three_classes_hand_computed():
    # row:     1    2    3    4    5    6
    # true:   cat  cat  cat  dog  dog  bird
    # pred:   cat  cat  dog  dog  bird bird        -> 4 of 6 right: accuracy 2/3
    # cat:  TP 2, predicted 2, true 3 -> P 1,   R 2/3, F1 2*(1*2/3)/(5/3) = 0.8
    # dog:  TP 1, predicted 2, true 2 -> P 1/2, R 1/2, F1 0.5
    # bird: TP 1, predicted 2, true 1 -> P 1/2, R 1,   F1 2*(1/2)/(3/2) = 2/3
    # macro F1 = (0.8 + 0.5 + 2/3) / 3 = 59/90
    result = classification_metrics(
        np.array(["cat", "cat", "cat", "dog", "dog", "bird"]),
        ["cat", "cat", "dog", "dog", "bird", "bird"],
        ["cat", "dog", "bird"],
    )
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx(59 / 90)
    expected = {"cat": (1.0, 2 / 3, 0.8, 3), "dog": (0.5, 0.5, 0.5, 2), "bird": (0.5, 1.0, 2 / 3, 1)}
    for cls, (precision, recall, f1, support) in expected.items():
        got = result["per_class"][cls]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((precision, recall, f1)), cls
        assert got["support"] == support
    # rows = true (cat, dog, bird), columns = predicted
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert "roc_auc" not in result and "ece" not in result
    assert_plain_json(result)


def test_macro_f1_skips_absent_classes_and_unknown_predictions_count_wrong():
    # classes a, b, c; c never occurs. Row 2 predicts "zzz" (not a class): a false negative of a.
    # a: TP 1, predicted 1, true 2 -> P 1, R 1/2, F1 2/3;  b: TP 1 of 1 -> F1 1;  c: left out of the macro average
    # macro F1 = (2/3 + 1) / 2 = 5/6; accuracy 2/3; "zzz" is in no cell of the confusion matrix
    result = classification_metrics(["a", "a", "b"], ["a", "zzz", "b"], ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx(5 / 6)
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_probability_metrics_hand_computed():
    # row  true  p(a)  p(b)  top  conf  correct
    #  1    a    0.90  0.10   a   0.90   yes     bin [0.9, 1.0]
    #  2    b    0.80  0.20   a   0.80   no      bin [0.8, 0.9)
    #  3    b    0.32  0.68   b   0.68   yes     bin [0.6, 0.7)
    #  4    a    0.38  0.62   b   0.62   no      bin [0.6, 0.7)
    # ECE = 1/4*|1 - 0.9| + 1/4*|0 - 0.8| + 2/4*|0.5 - (0.68 + 0.62)/2| = 0.025 + 0.2 + 0.075 = 0.3
    # ROC-AUC of a: positives {0.9, 0.38} vs negatives {0.8, 0.32}: 3 of 4 pairs ranked right -> 0.75; b likewise
    # AP of a: ranked 0.9(+) 0.8(-) 0.38(+) 0.32(-): recall steps 0.5 at precision 1 and 0.5 at precision 2/3
    #          -> 0.5 + 1/3 = 5/6; b is ranked 0.68(+) 0.62(-) 0.2(+) 0.1(-), the same pattern -> 5/6
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.32, 0.68], [0.38, 0.62]])
    result = classification_metrics(["a", "b", "b", "a"], ["a", "a", "b", "b"], ["a", "b"], proba)
    assert result["ece"] == pytest.approx(0.3)
    assert result["roc_auc"] == pytest.approx(0.75)
    assert result["pr_auc"] == pytest.approx(5 / 6)
    assert_plain_json(result)


def _pairwise_auc(positive: list[bool], score: np.ndarray) -> float:
    """Brute force: share of (positive, negative) pairs with the positive scored higher, ties half."""
    pairs = [
        (s_p > s_n) + 0.5 * (s_p == s_n)
        for s_p, p in zip(score, positive, strict=True)
        if p
        for s_n, n in zip(score, positive, strict=True)
        if not n
    ]
    return sum(pairs) / len(pairs)


def _brute_average_precision(positive: list[bool], score: np.ndarray) -> float:
    """Mean over positives of the precision among rows scored at least as high as that positive."""
    return float(
        np.mean(
            [
                np.mean([q for q, s in zip(positive, score, strict=True) if s >= threshold])
                for threshold, p in zip(score, positive, strict=True)
                if p
            ]
        )
    )


def test_roc_and_pr_auc_are_one_vs_rest_macro_over_classes_in_truth_with_ties():
    rng = np.random.default_rng(3)
    classes = ["x", "y", "z", "never"]  # "never" has no positives: left out of both averages
    truth = ["x", "y", "z"] * 10
    proba = np.round(rng.dirichlet(np.ones(4), size=30), 1)  # rounding makes plenty of tied scores
    proba[:, 3] = 1 - proba[:, :3].sum(axis=1).clip(max=1)
    result = classification_metrics(truth, truth, classes, proba)
    positives = [[t == c for t in truth] for c in classes[:3]]
    assert result["roc_auc"] == pytest.approx(np.mean([_pairwise_auc(p, proba[:, i]) for i, p in enumerate(positives)]))
    assert result["pr_auc"] == pytest.approx(
        np.mean([_brute_average_precision(p, proba[:, i]) for i, p in enumerate(positives)])
    )


def test_roc_and_pr_auc_with_tied_scores_hand_computed():
    # class a: positives scored 0.6, 0.6; negatives 0.6, 0.2
    # AUC pairs: (0.6 vs 0.6) 1/2 twice, (0.6 vs 0.2) 1 twice -> 3/4
    # AP: one threshold group {0.6 x3}: recall 1 at precision 2/3 -> 2/3 (the 0.2 row adds no recall)
    # class b: scores 0.4, 0.4, 0.4, 0.8 with the positives being the last two rows:
    # AUC pairs (pos 0.4 vs neg 0.4) 1/2 twice, (pos 0.8 vs neg 0.4) 1 twice -> 3/4
    # AP: threshold 0.8: recall 1/2 at precision 1; threshold 0.4: recall 1 at precision 2/4 -> 0.5 + 0.25 = 0.75
    proba = np.array([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.2, 0.8]])
    result = classification_metrics(["a", "a", "b", "b"], ["a", "a", "a", "b"], ["a", "b"], proba)
    assert result["roc_auc"] == pytest.approx(0.75)
    assert result["pr_auc"] == pytest.approx((2 / 3 + 0.75) / 2)


def test_roc_and_pr_auc_are_none_when_truth_has_a_single_class():
    result = classification_metrics(["a", "a"], ["a", "b"], ["a", "b"], np.array([[0.7, 0.3], [0.4, 0.6]]))
    assert result["roc_auc"] is None and result["pr_auc"] is None
    # one row per bin: |1 - 0.7| and |0 - 0.6| -> ECE (0.3 + 0.6) / 2
    assert result["ece"] == pytest.approx(0.45)


@pytest.mark.parametrize("proba", [np.ones((2, 3)) / 3, np.ones((3, 2)) / 2, np.array([[0.5, np.nan], [0.5, 0.5]])])
def test_classification_rejects_bad_proba(proba):
    with pytest.raises(ValueError, match="proba"):
        classification_metrics(["a", "b"], ["a", "b"], ["a", "b"], proba)


# -- regression ---------------------------------------------------------------------------------------------------
def test_regression_hand_computed():
    # errors (pred - true): 0, +1, -1, +2 -> MAE 4/4 = 1, MSE (0+1+1+4)/4 = 1.5, RMSE sqrt(1.5)
    # mean(true) 2.5 -> SS_tot 2.25+0.25+0.25+2.25 = 5, SS_res 6 -> R² = 1 - 6/5 = -0.2
    result = regression_metrics([1, 2, 3, 4], np.array([1.0, 3.0, 2.0, 6.0], dtype=np.float32))
    assert result == pytest.approx({"mae": 1.0, "rmse": math.sqrt(1.5), "r2": -0.2})
    assert_plain_json(result)


def test_regression_r2_is_none_for_constant_truth_and_nan_is_rejected():
    result = regression_metrics([3, 3, 3], [3, 4, 2])
    assert result["r2"] is None
    assert result["mae"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="y_pred contains missing, NaN"):
        regression_metrics([1, 2], [1, float("nan")])


# -- extraction ---------------------------------------------------------------------------------------------------
FIELDS = ["vendor", "total", "tags", "date"]
TRUTH = [
    {"vendor": "Acme Corp", "total": 12.50, "tags": ["a", "b", "b"], "date": "2024-01-01"},
    {"vendor": "Globex", "total": 100.0, "tags": ["x"], "date": None},
]
PRED = [
    {"vendor": "  acme corp ", "total": 12.504, "tags": ["B", "a"], "date": None},
    {"vendor": "Globex", "total": 100.01, "tags": ["x"]},
]


def test_extraction_hand_computed():
    # exact match per field (row 1, row 2):
    #   vendor: "acme corp" after strip + casefold (yes), equal (yes)          -> 1.0
    #   total:  |12.504 - 12.5| = 0.004 <= 0.005 (yes), |100.01 - 100| (no)   -> 0.5
    #   tags:   {a, b, b} vs {b, a} (no), {x} vs {x} (yes)                      -> 0.5
    #   date:   value vs None (no), None vs missing = both absent (yes)         -> 0.5
    # field_exact_match = (1 + 0.5 + 0.5 + 0.5) / 4 = 0.625
    # units: true  row 1: vendor 1 + total 1 + tags 3 + date 1 = 6, row 2: 1 + 1 + 1 = 3 -> 9
    #        pred  row 1: 1 + 1 + 2 = 4, row 2: 1 + 1 + 1 = 3                             -> 7
    #        matched row 1: vendor, total, tags a and b = 4, row 2: vendor, tags x = 2     -> 6
    # P = 6/7, R = 6/9, F1 = 2 * (6/7)(2/3) / (6/7 + 2/3) = (24/21) / (32/21) = 0.75
    result = extraction_metrics(TRUTH, PRED, FIELDS)
    assert result["per_field"] == pytest.approx({"vendor": 1.0, "total": 0.5, "tags": 0.5, "date": 0.5})
    assert list(result["per_field"]) == FIELDS
    assert result["field_exact_match"] == pytest.approx(0.625)
    assert result["micro_precision"] == pytest.approx(6 / 7)
    assert result["micro_recall"] == pytest.approx(6 / 9)
    assert result["micro_f1"] == pytest.approx(0.75)
    assert_plain_json(result)


def test_extraction_unparsable_prediction_counts_as_empty_record():
    # field a: "x" vs nothing (no); field b: None vs nothing (yes). 1 true unit, 0 predicted -> P = R = F1 = 0
    result = extraction_metrics([{"a": "x", "b": None}], ["{not json"], ["a", "b"])
    assert result["per_field"] == {"a": 0.0, "b": 1.0}
    assert (result["micro_precision"], result["micro_recall"], result["micro_f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"y_true\[0\] must be a mapping"):
        extraction_metrics(["oops"], [{}], ["a"])
    with pytest.raises(ValueError, match="fields is empty"):
        extraction_metrics([{"a": 1}], [{"a": 1}], [])


@pytest.mark.parametrize(
    ("truth", "pred", "equal"),
    [
        (12.5, 12.504, True),
        (12.5, 12.496, True),
        (12.5, 12.506, False),
        (12.5, "12.5", False),
        (True, 1, False),
        (["a"], ["a", "b"], False),
        (["a", "b"], ["b", "a"], True),
        ([{"sku": "A1", "qty": 2}], [{"sku": " a1", "qty": 2.001}], True),
        ([], None, True),
        ({"city": "Paris"}, {"city": "paris", "zip": None}, True),
        ({"city": "Paris"}, {"city": "Lyon"}, False),
    ],
)
def test_extraction_value_normalisation(truth, pred, equal):
    result = extraction_metrics([{"f": truth}], [{"f": pred}], ["f"])
    assert result["field_exact_match"] == (1.0 if equal else 0.0)


# -- text ---------------------------------------------------------------------------------------------------------
def test_text_metrics_hand_computed():
    # 1: "the cat sat" -> [cat, sat]; "cat sat down" -> [cat, sat, down]; common 2: P 2/3, R 1, F1 0.8; EM no
    # 2: "Hello, World!" and "hello world" both normalise to [hello, world]: F1 1, EM yes
    # 3: both empty: F1 1, EM yes
    # 4: "a" is an article -> [] vs [b]: F1 0, EM no
    # exact_match 2/4 = 0.5, token_f1 (0.8 + 1 + 1 + 0) / 4 = 0.7
    result = text_metrics(["the cat sat", "Hello, World!", "", "a"], ["cat sat down", "hello world", "", "b"])
    assert result == pytest.approx({"exact_match": 0.5, "token_f1": 0.7})
    assert text_metrics(["the cat sat"], ["cat sat down"])["token_f1"] == pytest.approx(0.8)
    assert_plain_json(result)


# -- row scores ---------------------------------------------------------------------------------------------------
def test_row_scores_per_kind():
    assert row_scores("enum", ["a", "b", "c"], ["a", "c", "c"]).tolist() == [1.0, 0.0, 1.0]
    assert row_scores("text", ["the cat sat", "x"], ["cat sat down", "x"]).tolist() == pytest.approx([0.8, 1.0])
    assert row_scores("number", [1.0, 2.0], [1.5, 0.0]).tolist() == pytest.approx([-0.5, -2.0])
    # fields = vendor, total, tags, date; row 1 matches vendor, total -> 2/4; row 2 vendor, tags, date -> 3/4
    assert row_scores("object", TRUTH, PRED).tolist() == pytest.approx([0.5, 0.75])
    with pytest.raises(ValueError, match="unknown response kind 'image'"):
        row_scores("image", ["a"], ["a"])


# -- bootstrap ----------------------------------------------------------------------------------------------------
def _bernoulli(n: int, seed: int = 7) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < 0.7).astype(float)


def test_bootstrap_ci_brackets_estimate_and_is_deterministic_per_seed():
    scores = np.random.default_rng(5).normal(10.0, 2.0, size=60)  # continuous, so other seeds give other bounds
    low, high = bootstrap_ci(lambda idx: scores[idx].mean(), len(scores), seed=1)
    assert type(low) is float and type(high) is float
    assert low < scores.mean() < high
    assert bootstrap_ci(lambda idx: scores[idx].mean(), len(scores), seed=1) == (low, high)
    assert bootstrap_ci(lambda idx: scores[idx].mean(), len(scores), seed=2) != (low, high)
    narrower = bootstrap_ci(lambda idx: scores[idx].mean(), len(scores), seed=1, confidence=0.5)
    assert low < narrower[0] <= narrower[1] < high


def test_bootstrap_ci_is_narrower_for_more_rows():
    small, large = _bernoulli(40), _bernoulli(4000)
    low_s, high_s = bootstrap_ci(lambda idx: small[idx].mean(), len(small))
    low_l, high_l = bootstrap_ci(lambda idx: large[idx].mean(), len(large))
    assert high_l - low_l < (high_s - low_s) / 3  # width shrinks like 1/sqrt(n): sqrt(100) = 10x


def test_bootstrap_ci_skips_undefined_resamples_and_validates():
    assert bootstrap_ci(lambda idx: None, 5, n_resamples=20) == (None, None)
    # a metric undefined on every resample but the ones starting with row 0 still gives an interval
    low, high = bootstrap_ci(lambda idx: 1.0 if idx[0] == 0 else float("nan"), 3, n_resamples=200)
    assert (low, high) == (1.0, 1.0)
    for kwargs in ({"n_rows": 0}, {"n_rows": 5, "n_resamples": 0}, {"n_rows": 5, "confidence": 1.0}):
        with pytest.raises(ValueError):
            bootstrap_ci(lambda idx: 0.0, **kwargs)


# -- slices -------------------------------------------------------------------------------------------------------
def _slice_frame() -> pd.DataFrame:
    # amount 1..45; region north (amount 1-20, score 0.25), south (21-40, 0.75), east (41-45, 0.0)
    # channel null for amount 1-10 and 41-45, "web" otherwise
    amount = np.arange(1, 46)
    region = np.where(amount <= 20, "north", np.where(amount <= 40, "south", "east"))
    score = np.select([region == "north", region == "south"], [0.25, 0.75], 0.0)
    channel = [None if a <= 10 or a > 40 else "web" for a in amount]
    return pd.DataFrame({"amount": amount, "region": region, "channel": channel, "tier": amount % 3, "score": score})


def test_worst_slices_orders_worst_first_drops_small_slices_and_bins_numerics():
    # overall mean = (20 * 0.25 + 20 * 0.75 + 5 * 0) / 45 = 20/45
    # channel=null:     (10 * 0.25 + 5 * 0) / 15 = 1/6          delta 1/6 - 4/9
    # region=north:     0.25 (20 rows)                          delta 0.25 - 4/9  (tie: more support first)
    # amount=[1, 12):   amounts 1-11 all north -> 0.25 (11 rows)
    # amount=[12, 23):  9 north + 2 south (21, 22) -> 3.75 / 11
    # region=east (5 rows, mean 0, the worst) is dropped: support < 10
    # quartiles of 1..45 are 1, 12, 23, 34, 45 -> bins [1, 12) [12, 23) [23, 34) [34, 45]
    slices = worst_slices(_slice_frame(), "score", ["region", "amount", "channel", "tier"], min_support=10, limit=20)
    overall = 20 / 45
    top = [(s["column"], s["value"], s["support"]) for s in slices[:4]]
    assert top == [
        ("channel", "null", 15),
        ("region", "north", 20),
        ("amount", "[1, 12)", 11),
        ("amount", "[12, 23)", 11),
    ]
    assert slices[0]["score"] == pytest.approx(1 / 6)
    assert slices[0]["delta"] == pytest.approx(1 / 6 - overall)
    assert slices[3]["score"] == pytest.approx(3.75 / 11)
    assert all(s["support"] >= 10 for s in slices)
    assert ("region", "east") not in {(s["column"], s["value"]) for s in slices}
    deltas = [s["delta"] for s in slices]
    assert deltas == sorted(deltas)
    amount_bins = {s["value"] for s in slices if s["column"] == "amount"}
    assert amount_bins == {"[1, 12)", "[12, 23)", "[23, 34)", "[34, 45]"}
    assert all(re.fullmatch(r"\[[-\d.e+]+, [-\d.e+]+[)\]]", value) for value in amount_bins)
    # tier has 3 distinct values: sliced by value, not binned
    assert {s["value"] for s in slices if s["column"] == "tier"} == {"0", "1", "2"}
    assert_plain_json(slices)


def test_worst_slices_limit_support_and_errors():
    frame = _slice_frame()
    assert len(worst_slices(frame, "score", ["region", "amount"], limit=2)) == 2
    assert worst_slices(frame, "score", ["region"], min_support=1)[0]["value"] == "east"
    assert worst_slices(frame, "score", ["region"], min_support=46) == []
    with pytest.raises(ValueError, match="not in the frame"):
        worst_slices(frame, "score", ["nope"])
    with pytest.raises(ValueError, match="score column"):
        worst_slices(frame, "nope", ["region"])


# -- plots --------------------------------------------------------------------------------------------------------
PLOTS = {
    "confusion": lambda path: confusion_matrix_png([[5, 1, 0], [2, 7, 1], [0, 0, 4]], ["cat", "dog", "bird"], path),
    "calibration": lambda path: calibration_png(
        [0.95, 0.81, 0.66, 0.62, 0.55, 0.99], [True, False, True, False, True, True], path
    ),
    "residuals": lambda path: residuals_png([1.0, 2.0, 3.0, 4.0], [1.1, 2.5, 2.7, 4.4], path),
    "field_accuracy": lambda path: field_accuracy_png({"vendor": 1.0, "total": 0.5, "tags": 0.25}, path),
}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plots_write_png_files(tmp_path: Path, name: str):
    target = tmp_path / "nested" / f"{name}.png"
    written = PLOTS[name](str(target))
    assert written == target
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1024


def test_plots_reject_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="2 x 2"):
        confusion_matrix_png([[1, 2, 3]], ["a", "b"], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="per_field is empty"):
        field_accuracy_png({}, tmp_path / "f.png")
    with pytest.raises(ValueError, match="differ in length"):
        calibration_png([0.5, 0.6], [True], tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_png([1.5], [True], tmp_path / "c.png")
    assert not list(tmp_path.iterdir())


# -- input validation ---------------------------------------------------------------------------------------------
CALLS = {
    "classification": lambda t, p: classification_metrics(t, p, ["a", "b"]),
    "regression": regression_metrics,
    "extraction": lambda t, p: extraction_metrics(t, p, ["a"]),
    "text": text_metrics,
    "row_scores": lambda t, p: row_scores("enum", t, p),
    "residuals": lambda t, p: residuals_png(t, p, "/nonexistent/never.png"),
}
ROWS = {
    "classification": "a",
    "regression": 1.0,
    "extraction": {"a": 1},
    "text": "a",
    "row_scores": "a",
    "residuals": 1.0,
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_empty_and_mismatched_inputs_raise(name: str):
    row = ROWS[name]
    with pytest.raises(ValueError, match="are empty"):
        CALLS[name]([], [])
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        CALLS[name]([row, row], [row])
