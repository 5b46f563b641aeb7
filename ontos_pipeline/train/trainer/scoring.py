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


def better(metric: str, a: float, b: float) -> bool:
    """True if `a` is strictly better than `b` for `metric`."""
    return a > b if metrics.HIGHER_IS_BETTER[metric] else a < b
