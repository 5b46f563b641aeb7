"""Evaluation metrics for fine-tuned models: classification (enum), regression (number), extraction (object), text.

Pure functions over lists or numpy arrays; they know nothing of Spark, Dagster or MLflow. Every result is plain
JSON (float/int/str/bool/list/dict/None; NaN becomes None), ready for MLflow, Dagster metadata or a report. Plots
render off-screen on an Agg canvas without pyplot, so no global matplotlib state is touched; matplotlib is imported
on first use. ROC-AUC and average precision are computed in numpy (same definitions as scikit-learn's
`roc_auc_score` / `average_precision_score`), which spares every caller the seconds-long scikit-learn import.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ontos_pipeline.specs import METRICS_BY_KIND

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "r2": True,
    "mae": False,
    "rmse": False,
    "field_exact_match": True,
    "micro_f1": True,
    "token_f1": True,
    "exact_match": True,
}

# Response kind -> headline metrics a quality gate may use.
CALIBRATION_BINS = 10
MONEY_TOLERANCE = 0.005  # numbers within this are equal (money rounding)
_TOLERANCE = MONEY_TOLERANCE + 1e-9  # float slack: 10.005 - 10.0 is 0.00500000000000078
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


# -- helpers ------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Numpy scalars/arrays -> Python types, NaN/inf -> None, recursively."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_pair(y_true: Sequence[Any], y_pred: Sequence[Any], names: tuple[str, str] = ("y_true", "y_pred")) -> int:
    """Row count of two equally long, non-empty sequences; ValueError otherwise."""
    n_true, n_pred = len(y_true), len(y_pred)
    if n_true != n_pred:
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {n_true} != {n_pred}")
    if n_true == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty; at least one row is needed")
    return n_true


def _floats(values: Sequence[Any], name: str) -> np.ndarray:
    """A 1-d float array of finite numbers; ValueError otherwise."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must contain numbers only: {exc}") from exc
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        rows = np.flatnonzero(~np.isfinite(array))[:5].tolist()
        raise ValueError(f"{name} contains missing, NaN or infinite values (first rows: {rows})")
    return array


def _safe_div(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _safe_div(2 * precision * recall, precision + recall)


# -- classification -----------------------------------------------------------------------------------------------
def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str], proba: np.ndarray | None = None
) -> dict:
    """Accuracy, macro-F1, per-class P/R/F1/support, confusion matrix and, given `proba`, ROC-AUC, PR-AUC and ECE.

    macro_f1 averages over the `classes` that occur in y_true or y_pred (zero_division=0); predictions outside
    `classes` count as wrong (false negatives of the true class) and are left out of the confusion matrix (rows=true,
    cols=pred, in `classes` order). `proba` is n x len(classes), columns in `classes` order. roc_auc / pr_auc
    (average precision) are one-vs-rest macro averages over the classes present in y_true with both positives and
    negatives (None if there are none); ece bins the top probability into 10 equal-width bins [0, 0.1), ...,
    [0.9, 1.0] and weights |accuracy - mean confidence| of the arg-max class by bin size.
    """
    n = _check_pair(y_true, y_pred)
    labels = list(classes)
    if not labels:
        raise ValueError("classes is empty; at least one class is needed")
    if len(set(labels)) != len(labels):
        raise ValueError(f"classes contains duplicates: {labels}")
    truth, pred = list(y_true), list(y_pred)
    index = {label: i for i, label in enumerate(labels)}

    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, pred, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    true_count, pred_count = Counter(truth), Counter(pred)
    hits = Counter(t for t, p in zip(truth, pred, strict=True) if t == p)

    per_class, present_f1 = {}, []
    for label in labels:
        precision = _safe_div(hits[label], pred_count[label])
        recall = _safe_div(hits[label], true_count[label])
        f1 = _f1(precision, recall)
        per_class[str(label)] = {"precision": precision, "recall": recall, "f1": f1, "support": true_count[label]}
        if true_count[label] or pred_count[label]:
            present_f1.append(f1)

    result: dict[str, Any] = {
        "accuracy": sum(hits.values()) / n,
        "macro_f1": float(np.mean(present_f1)) if present_f1 else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
    if proba is not None:
        result.update(_probability_metrics(truth, labels, proba))
    return _plain(result)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)
    return ranks


def _roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC: share of (positive, negative) pairs ranked right, ties counting half."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((_average_ranks(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Sum over distinct thresholds (high to low) of recall gained x precision, as scikit-learn defines it."""
    order = np.argsort(-score, kind="mergesort")
    ordered, hits = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]  # last row of each tied group
    tp, predicted = np.cumsum(hits)[last], last + 1
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * tp / predicted))


def _probability_metrics(truth: list[Any], labels: list[Any], proba: np.ndarray) -> dict:
    scores = np.asarray(proba, dtype=float)
    if scores.shape != (len(truth), len(labels)):
        raise ValueError(f"proba must have shape (rows, classes) = ({len(truth)}, {len(labels)}), got {scores.shape}")
    if not np.all(np.isfinite(scores)) or scores.min() < -1e-9 or scores.max() > 1 + 1e-9:
        raise ValueError("proba must contain probabilities in [0, 1] (no NaN)")
    aucs, average_precisions = [], []
    for i, label in enumerate(labels):
        positive = np.array([t == label for t in truth], dtype=bool)
        if positive.any() and not positive.all():
            aucs.append(_roc_auc(positive, scores[:, i]))
            average_precisions.append(_average_precision(positive, scores[:, i]))
    top = scores.argmax(axis=1)
    correct = np.array([t == labels[j] for t, j in zip(truth, top, strict=True)], dtype=bool)
    return {
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "pr_auc": float(np.mean(average_precisions)) if average_precisions else None,
        "ece": _expected_calibration_error(scores.max(axis=1), correct),
    }


def _reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin over [0, 1] (last bin closed): row count, accuracy and mean confidence (NaN if empty)."""
    which = np.clip(np.floor(confidence * bins).astype(int), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / counts
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
    return counts, accuracy, mean_confidence


def _expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    counts, accuracy, mean_confidence = _reliability(confidence, correct)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(accuracy[filled] - mean_confidence[filled])))


# -- regression ---------------------------------------------------------------------------------------------------
def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """mae, rmse and r2 (1 - SS_res / SS_tot; None when y_true is constant, where R² is undefined)."""
    _check_pair(y_true, y_pred)
    truth, pred = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    error = pred - truth
    ss_tot = float(np.sum((truth - truth.mean()) ** 2))
    return _plain(
        {
            "mae": float(np.mean(np.abs(error))),
            "rmse": float(np.sqrt(np.mean(error**2))),
            "r2": 1.0 - float(np.sum(error**2)) / ss_tot if ss_tot > 0 else None,
        }
    )


# -- extraction ---------------------------------------------------------------------------------------------------
def _normalise(value: Any) -> Any:
    """Comparable form: strings stripped and case-folded; None, NaN, empty lists and empty mappings -> None."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Decimal):
        value = float(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value.strip().casefold()
    if isinstance(value, Mapping):
        items = {str(key): _normalise(item) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not None} or None
    if isinstance(value, list | tuple | set | frozenset):
        return [item for item in map(_normalise, value) if item is not None] or None
    return value


def _equal(a: Any, b: Any) -> bool:
    """Equality of normalised values: numbers within MONEY_TOLERANCE, lists as multisets, mappings key by key."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= _TOLERANCE
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and _matched(a, b) == len(a)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def _matched(truth: list[Any], pred: list[Any]) -> int:
    """Size of a greedy multiset matching of two lists of normalised values."""
    remaining, count = list(pred), 0
    for item in truth:
        for j, candidate in enumerate(remaining):
            if _equal(item, candidate):
                del remaining[j]
                count += 1
                break
    return count


def _units(value: Any) -> list[Any]:
    """(field, value) units of a normalised value: a list's elements, else the value itself; None has none."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _records(rows: Sequence[Any], name: str, strict: bool) -> list[Mapping]:
    """Rows as mappings; None (and, unless strict, anything that is not a mapping) becomes an empty record."""
    records = []
    for i, row in enumerate(rows):
        if row is None or isinstance(row, Mapping):
            records.append(row or {})
        elif strict:
            raise ValueError(f"{name}[{i}] must be a mapping or None, got {type(row).__name__}")
        else:
            records.append({})
    return records


def extraction_metrics(
    y_true: Sequence[Mapping | None], y_pred: Sequence[Mapping | None], fields: Sequence[str]
) -> dict:
    """Per-field exact-match rates, their mean (field_exact_match) and micro P/R/F1 over (field, value) units.

    A list value contributes each element as a unit (multiset), any other value one unit; None, missing keys and
    empty lists contribute none (and two absent values match). Strings compare stripped and case-folded, numbers
    within 0.005. Predictions that are not mappings (unparsable output) count as empty records. micro_precision =
    matched / predicted units, micro_recall = matched / true units, micro_f1 their harmonic mean; each 0 when
    undefined.
    """
    n = _check_pair(y_true, y_pred)
    names = list(dict.fromkeys(fields))
    if not names:
        raise ValueError("fields is empty; at least one field is needed")
    truths, preds = _records(y_true, "y_true", strict=True), _records(y_pred, "y_pred", strict=False)
    exact = dict.fromkeys(names, 0)
    matched = true_units = pred_units = 0
    for truth, pred in zip(truths, preds, strict=True):
        for name in names:
            t, p = _normalise(truth.get(name)), _normalise(pred.get(name))
            exact[name] += _equal(t, p)
            t_units, p_units = _units(t), _units(p)
            true_units += len(t_units)
            pred_units += len(p_units)
            matched += _matched(t_units, p_units)
    per_field = {name: hits / n for name, hits in exact.items()}
    precision, recall = _safe_div(matched, pred_units), _safe_div(matched, true_units)
    return _plain(
        {
            "per_field": per_field,
            "field_exact_match": float(np.mean(list(per_field.values()))),
            "micro_precision": precision,
            "micro_recall": recall,
            "micro_f1": _f1(precision, recall),
        }
    )


# -- free text ----------------------------------------------------------------------------------------------------
def _tokens(text: Any) -> list[str]:
    """SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, split on whitespace."""
    if text is None:
        return []
    lowered = str(text).lower()
    kept = "".join(
        ch for ch in lowered if ch not in _ASCII_PUNCTUATION and not unicodedata.category(ch).startswith("P")
    )
    return _ARTICLES.sub(" ", kept).split()


def _token_f1(truth: list[str], pred: list[str]) -> float:
    if not truth or not pred:
        return float(truth == pred)
    common = sum((Counter(truth) & Counter(pred)).values())
    return _f1(common / len(pred), common / len(truth))


def text_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict:
    """exact_match and token_f1 (SQuAD style, both on normalised text; two empty answers score 1.0)."""
    _check_pair(y_true, y_pred)
    pairs = [(_tokens(t), _tokens(p)) for t, p in zip(y_true, y_pred, strict=True)]
    return _plain(
        {
            "exact_match": float(np.mean([t == p for t, p in pairs])),
            "token_f1": float(np.mean([_token_f1(t, p) for t, p in pairs])),
        }
    )


# -- per-row scores, bootstrap, slices ----------------------------------------------------------------------------
def row_scores(kind: str, y_true: Sequence[Any], y_pred: Sequence[Any]) -> np.ndarray:
    """Per-row correctness for slices and failure examples: enum exact match (0/1), text token F1, object share of
    fields exactly matched (fields = union of the truth's keys over all rows), number -|error| (higher is better)."""
    if kind not in METRICS_BY_KIND:
        raise ValueError(f"unknown response kind {kind!r}; expected one of {sorted(METRICS_BY_KIND)}")
    n = _check_pair(y_true, y_pred)
    if kind == "enum":
        return np.array([float(t == p) for t, p in zip(y_true, y_pred, strict=True)])
    if kind == "text":
        return np.array([_token_f1(_tokens(t), _tokens(p)) for t, p in zip(y_true, y_pred, strict=True)])
    if kind == "number":
        return -np.abs(_floats(y_pred, "y_pred") - _floats(y_true, "y_true"))
    truths, preds = _records(y_true, "y_true", strict=True), _records(y_pred, "y_pred", strict=False)
    fields = list(dict.fromkeys(key for truth in truths for key in truth))
    if not fields:
        return np.ones(n)
    return np.array(
        [
            sum(_equal(_normalise(truth.get(f)), _normalise(pred.get(f))) for f in fields) / len(fields)
            for truth, pred in zip(truths, preds, strict=True)
        ]
    )


def bootstrap_ci(
    metric: Callable[[np.ndarray], float], n_rows: int, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval: `metric` receives an index array (a resample with replacement of
    range(n_rows)). Resamples where the metric is None/NaN are skipped; (None, None) if all are."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        value = metric(rng.integers(0, n_rows, size=n_rows))
        if value is not None and math.isfinite(value):
            values.append(float(value))
    if not values:
        return None, None
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _is_null(value: Any) -> bool:
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _bin_labels(edges: np.ndarray) -> list[str]:
    """ "[a, b)" per bin (the last one closed, "[a, b]"), with as few significant digits as keep edges distinct."""
    for digits in range(4, 17):
        text = [f"{edge:.{digits}g}" for edge in edges]
        if len(set(text)) == len(text):
            break
    labels = [f"[{text[i]}, {text[i + 1]})" for i in range(len(text) - 1)]
    labels[-1] = labels[-1][:-1] + "]"
    return labels


def _slice_values(series: pd.Series) -> np.ndarray:
    """Slice label per row: quartile bin for numeric columns with > 10 distinct values, else str(value); "null"."""
    null = np.array([_is_null(value) for value in series], dtype=bool)
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if numeric and series[~null].nunique() > 10:
        values = series[~null].astype(float).to_numpy()
        edges = np.unique(np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0]))
        labels = _bin_labels(edges)
        which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        out = np.full(len(series), "null", dtype=object)
        out[~null] = [labels[i] for i in which]
        return out
    return np.array(
        ["null" if is_null else str(value) for value, is_null in zip(series, null, strict=True)], dtype=object
    )


def worst_slices(
    frame: pd.DataFrame, score: str, columns: Sequence[str], min_support: int = 10, limit: int = 10
) -> list[dict]:
    """Slices (column = value) whose mean `score` is furthest below the overall mean, worst first.

    Numeric columns with > 10 distinct values are cut into quartile bins labelled "[lo, hi)" (the top bin "[lo, hi]"),
    other values become str(value), nulls the slice "null". Rows without a score are ignored; slices with fewer than
    `min_support` rows are dropped. Each slice: {column, value, support, score, delta = score - overall mean}.
    """
    if score not in frame.columns:
        raise ValueError(f"score column {score!r} is not in the frame")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"slice columns not in the frame: {missing}")
    scores = pd.to_numeric(frame[score], errors="raise").astype(float)
    scored = scores.notna().to_numpy()
    if not scored.any():
        raise ValueError(f"the frame has no rows with a {score!r} value")
    frame, scores = frame[scored], scores[scored]
    overall = float(scores.mean())
    slices = []
    for column in dict.fromkeys(columns):
        grouped = scores.groupby(_slice_values(frame[column]), sort=False).agg(["size", "mean"])
        for value, row in grouped.iterrows():
            if row["size"] >= min_support:
                slices.append(
                    {
                        "column": str(column),
                        "value": str(value),
                        "support": int(row["size"]),
                        "score": float(row["mean"]),
                        "delta": float(row["mean"]) - overall,
                    }
                )
    slices.sort(key=lambda s: (s["delta"], -s["support"], s["column"], s["value"]))
    return _plain(slices[:limit])


# -- plots --------------------------------------------------------------------------------------------------------
def _figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=100)
    return out


def confusion_matrix_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path) -> Path:
    """Heat map of a confusion matrix (rows = true, columns = predicted) with the counts written in the cells."""
    counts = np.asarray(matrix, dtype=float)
    labels = [str(label) for label in classes]
    if not labels:
        raise ValueError("classes is empty; at least one class is needed")
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix must be {len(labels)} x {len(labels)} (one row/column per class), got {counts.shape}")
    side = max(4.0, 0.55 * len(labels) + 2.5)
    figure = _figure(figsize=(side + 1, side))
    ax = figure.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    if len(labels) <= 30:
        threshold = counts.max() / 2
        for (i, j), count in np.ndenumerate(counts):
            ax.text(
                j,
                i,
                f"{count:g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count > threshold else "black",
            )
    return _save(figure, path)


def calibration_png(confidence: Sequence[float], correct: Sequence[bool], path: str | Path) -> Path:
    """Reliability diagram (accuracy per confidence bin, 10 bins, vs the diagonal) above a confidence histogram."""
    _check_pair(confidence, correct, ("confidence", "correct"))
    conf = _floats(confidence, "confidence")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidence must lie in [0, 1]")
    hits = np.asarray(correct, dtype=bool)
    counts, accuracy, mean_confidence = _reliability(conf, hits)
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / CALIBRATION_BINS
    filled = counts > 0
    figure = _figure(figsize=(5, 6))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(centres[filled], accuracy[filled], width=width, edgecolor="black", alpha=0.8, label="accuracy")
    top.plot(mean_confidence[filled], accuracy[filled], "o", color="darkred", label="mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE = {_expected_calibration_error(conf, hits):.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, counts, width=width, edgecolor="black", color="grey")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("rows")
    return _save(figure, path)


def residuals_png(y_true: Sequence[float], y_pred: Sequence[float], path: str | Path) -> Path:
    """Two panels: predicted vs actual (with y = x) and residuals (actual - predicted) vs predicted."""
    _check_pair(y_true, y_pred)
    truth, pred = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    figure = _figure(figsize=(10, 4.5))
    left, right = figure.subplots(1, 2)
    low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    left.scatter(truth, pred, s=12, alpha=0.6)
    left.plot([low, high], [low, high], linestyle="--", color="grey")
    left.set_xlabel("actual")
    left.set_ylabel("predicted")
    left.set_title("Predicted vs actual")
    right.scatter(pred, truth - pred, s=12, alpha=0.6)
    right.axhline(0, linestyle="--", color="grey")
    right.set_xlabel("predicted")
    right.set_ylabel("residual (actual - predicted)")
    right.set_title("Residuals vs fitted")
    return _save(figure, path)


def field_accuracy_png(per_field: Mapping[str, float], path: str | Path) -> Path:
    """Horizontal bar chart of the exact-match rate per field, in the given order from the top."""
    if not per_field:
        raise ValueError("per_field is empty; at least one field is needed")
    names = [str(name) for name in per_field]
    rates = _floats(list(per_field.values()), "per_field")
    figure = _figure(figsize=(6, max(2.5, 0.35 * len(names) + 1.2)))
    ax = figure.add_subplot()
    ax.barh(range(len(names)), rates, color="steelblue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("exact-match rate")
    ax.set_title("Field accuracy")
    for i, rate in enumerate(rates):
        ax.text(min(rate + 0.01, 0.9), i, f"{rate:.2f}", va="center", fontsize=8)
    return _save(figure, path)
