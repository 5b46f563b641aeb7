"""The metrics of one response kind for a set of predictions (used for validation and for evaluation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ontos_pipeline.train import metrics
from ontos_pipeline.train.trainer.models import Prediction


def score(kind: str, truths: Sequence, prediction: Prediction, schema: Mapping) -> dict:
    """All metrics of `kind` for `prediction` against `truths` (responses as parsed JSON values)."""
    if kind == "enum":
        return metrics.classification_metrics(
            [str(t) for t in truths],
            [str(p) for p in prediction.responses],
            prediction.classes or [str(c) for c in schema["enum"]],
            prediction.proba,
        )
    if kind == "number":
        return metrics.regression_metrics(
            np.asarray(truths, dtype=float), np.asarray(prediction.responses, dtype=float)
        )
    if kind == "object":
        return metrics.extraction_metrics(list(truths), list(prediction.responses), list(schema.get("properties", {})))
    return metrics.text_metrics([str(t) for t in truths], [str(p) for p in prediction.responses])


def headline(kind: str, truths: Sequence, prediction: Prediction, schema: Mapping, metric: str) -> float:
    value = score(kind, truths, prediction, schema).get(metric)
    if value is None:
        raise ValueError(
            f"metric {metric!r} is not computed for {kind} responses; use one of "
            f"{', '.join(metrics.METRICS_BY_KIND[kind])}"
        )
    return float(value)


def log_loss(truths: Sequence, prediction: Prediction) -> float:
    """Mean negative log-probability of the true class (enum predictions; probabilities floored at 1e-15)."""
    index = {c: j for j, c in enumerate(prediction.classes)}
    p = np.array([prediction.proba[i, index[str(t)]] if str(t) in index else 0.0 for i, t in enumerate(truths)])
    return float(-np.mean(np.log(np.clip(p, 1e-15, 1.0))))


def better(metric: str, a: float, b: float) -> bool:
    """True if `a` is strictly better than `b` for `metric`."""
    return a > b if metrics.HIGHER_IS_BETTER[metric] else a < b
