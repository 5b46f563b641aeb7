"""Model families per response kind and the `ResponseModel` that serves the template's contract.

Every family is fitted on training rows (item columns plus the rendered prompt) and predicts, for any frame of item
columns, responses that validate against the template's response schema with a confidence in [0, 1]:

- enum: `baseline` (majority class), `logistic` (structured columns, text columns and, when it helps on
  validation, the prompt's TF-IDF), `boosting` (gradient-boosted trees over structured columns, image pixels and
  the prompt's SVD projection);
- number: `baseline` (mean), `ridge` (the features of `logistic`), `boosting`; predictions are clipped to the
  schema's range, and ridge treats training targets at its bounds as censored (`NumberPredictor._fit`);
- object: `baseline` (each field's most frequent value), `linear` and `boosting` span rankers (extraction.py);
- text: `baseline` (most frequent answer), `knn` (nearest-neighbour retrieval of the neighbours' answers).

The linear families' regularization (`C`, `alpha`) and whether they read the prompt's TF-IDF (`prompt_tfidf`) are
picked on the validation split by the trainer's coordinate search over `GRID` (or tuned by its Optuna search).

Confidence of a number response (normalized split-conformal): the probability that the row's error is within the
tolerance (10% of the training target range). `calibrate` cross-fits the family on the training rows (FOLDS folds),
fits a spread model (gradient-boosted trees, Poisson loss) of the out-of-fold |error| from the dense features and
the prediction, then scores the held-out validation rows: s = |error| / spread(x). A row's confidence is the
conformal share of those scores that stay within tolerance / spread(x), #{s_j <= tolerance / spread(x)} / (n + 1):
rows the spread model finds hard get a lower confidence, and on average the confidences match the share of
rows within tolerance. The baseline (spread 1) and an uncalibrated model give one confidence for every row.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.neighbors import NearestNeighbors

from ontos_pipeline.generate.template import CompiledTemplate
from ontos_pipeline.platform.images import image_file_column
from ontos_pipeline.train.trainer.extraction import FieldExtractor
from ontos_pipeline.train.trainer.features import PROMPT, FeatureColumns, ItemFeatures

FAMILIES = {
    "enum": ("baseline", "logistic", "boosting"),
    "number": ("baseline", "ridge", "boosting"),
    "object": ("baseline", "linear", "boosting"),
    "text": ("baseline", "knn"),
}
# search space per family: name -> (low, high, log scale) for floats, (low, high) for ints, [choices] for choices
SEARCH_SPACE = {
    "logistic": {"C": (0.01, 100.0, True), "prompt_tfidf": [True, False]},
    "ridge": {"alpha": (0.01, 100.0, True), "prompt_tfidf": [True, False]},
    "boosting": {"learning_rate": (0.02, 0.3, True), "max_leaf_nodes": (8, 63)},
    "knn": {"k": (1, 25)},
    "linear": {},
}
DEFAULTS = {
    "logistic": {"C": 1.0, "prompt_tfidf": True},
    "ridge": {"alpha": 1.0, "prompt_tfidf": True},
    "boosting": {"learning_rate": 0.1, "max_leaf_nodes": 31},
    "knn": {"k": 5},
    "linear": {},
    "baseline": {},
}
# the trainer's coordinate search per linear family, axis by axis (the first value is the start and wins ties)
GRID = {
    "logistic": {"prompt_tfidf": (False, True), "C": (1.0, 0.1, 10.0)},
    "ridge": {"prompt_tfidf": (False, True), "alpha": (1.0, 0.1, 10.0, 100.0)},
}
PROMPT_PARAM = "prompt_tfidf"
FOLDS = 3  # cross-fitting folds for the spread model of number confidences
CENSORED_ROUNDS = 3  # refits of a linear number model that treat targets at the schema's bounds as censored


@dataclass
class Prediction:
    responses: list
    confidence: np.ndarray
    proba: np.ndarray | None = None  # enum only: n x len(classes), columns in `classes` order
    classes: list[str] = field(default_factory=list)


class Predictor(ABC):
    """One fitted family: `fit(frame, responses)` then `predict(frame)`; `frame` holds the PROMPT column."""

    def __init__(self, family: str, schema: Mapping, features: ItemFeatures | None, params: Mapping, seed: int):
        self.family, self.schema, self.features, self.seed = family, dict(schema), features, seed
        self.params = {**DEFAULTS.get(family, {}), **params}

    @abstractmethod
    def fit(self, frame: pd.DataFrame, responses: Sequence) -> Predictor: ...

    @abstractmethod
    def predict(self, frame: pd.DataFrame) -> Prediction: ...

    def calibrate(self, frame: pd.DataFrame, responses: Sequence, held_out: pd.DataFrame, truths: Sequence):
        """Fit the confidence on held-out rows (`held_out`, `truths`); `frame`/`responses` are the training rows."""
        return self

    def _sparse(self, frame: pd.DataFrame):
        return self.features.sparse(frame, prompt=bool(self.params.get(PROMPT_PARAM, True)))


class EnumPredictor(Predictor):
    def fit(self, frame, responses):
        self.classes = [str(c) for c in self.schema["enum"]]
        y = np.asarray([str(r) for r in responses])
        if self.family == "baseline":
            counts = Counter(y.tolist())
            self.prior = np.array([counts.get(c, 0) for c in self.classes], dtype=float) / len(y)
        elif self.family == "logistic":
            self.model = LogisticRegression(C=float(self.params["C"]), max_iter=3000).fit(self._sparse(frame), y)
        else:
            self.model = HistGradientBoostingClassifier(
                learning_rate=float(self.params["learning_rate"]),
                max_leaf_nodes=int(self.params["max_leaf_nodes"]),
                max_iter=200,
                early_stopping=True,
                random_state=self.seed,
            ).fit(self.features.dense(frame), y)
        return self

    def predict(self, frame):
        if self.family == "baseline":
            proba = np.tile(self.prior, (len(frame), 1))
        else:
            x = self._sparse(frame) if self.family == "logistic" else self.features.dense(frame)
            known = self.model.predict_proba(x)
            proba = np.zeros((len(frame), len(self.classes)))
            for j, c in enumerate(self.model.classes_):
                proba[:, self.classes.index(str(c))] = known[:, j]
        best = proba.argmax(axis=1)
        return Prediction([self.classes[i] for i in best], proba.max(axis=1), proba, list(self.classes))


def spread_estimator(rows: int, seed: int):
    """The model of a row's expected |error| (positive predictions: Poisson loss), kept small against overfitting."""
    return HistGradientBoostingRegressor(
        loss="poisson",
        learning_rate=0.05,
        max_iter=100,
        max_leaf_nodes=8,
        min_samples_leaf=max(10, rows // 20),
        random_state=seed,
    )


class NumberPredictor(Predictor):
    def fit(self, frame, responses):
        y = np.asarray(responses, dtype=float)
        self.tolerance = 0.1 * (float(np.ptp(y)) or 1.0)
        if self.family == "baseline":
            self.mean = float(y.mean())
        else:
            self.model = self._fit(self._matrix(frame), y)
        self.spread_model = None
        # until `calibrate`: the share of training rows within tolerance, one confidence for every row
        self.scores = np.sort(np.abs(self._values(self._raw(frame)) - y))
        return self

    def _fit(self, x, y: np.ndarray):
        """The family's estimator fitted on (x, y). A target at the schema's minimum or maximum is censored (the
        source clipped it: the true value is at most the minimum, or at least the maximum), which a linear model
        cannot bend to: ridge refits with each censored target replaced by its prediction when that lies beyond the
        bound (a few rounds of Buckley-James-style imputation), so the clipped rows stop pulling the line."""
        model = self._estimator().fit(x, y)
        if self.family != "ridge":
            return model
        low, high = self.schema.get("minimum", -np.inf), self.schema.get("maximum", np.inf)  # as `_values` clips
        at_low, at_high = np.isclose(y, low), np.isclose(y, high)
        if not (at_low.any() or at_high.any()):
            return model
        for _ in range(CENSORED_ROUNDS):
            raw = model.predict(x)
            work = np.where(at_low, np.minimum(raw, low), np.where(at_high, np.maximum(raw, high), y))
            model = self._estimator().fit(x, work)
        return model

    def _estimator(self):
        if self.family == "ridge":
            return Ridge(alpha=float(self.params["alpha"]))
        return HistGradientBoostingRegressor(
            learning_rate=float(self.params["learning_rate"]),
            max_leaf_nodes=int(self.params["max_leaf_nodes"]),
            max_iter=300,
            early_stopping=True,
            random_state=self.seed,
        )

    def _matrix(self, frame):
        return self._sparse(frame) if self.family == "ridge" else self.features.dense(frame)

    def _raw(self, frame) -> np.ndarray:
        if self.family == "baseline":
            return np.full(len(frame), self.mean)
        return self.model.predict(self._matrix(frame))

    def _values(self, raw: np.ndarray) -> np.ndarray:
        values = np.clip(raw, self.schema.get("minimum", -np.inf), self.schema.get("maximum", np.inf))
        return np.round(values) if self.schema.get("type") == "integer" else values

    def _spread(self, frame, values: np.ndarray) -> np.ndarray:
        """The expected |error| of each row, relative (1 everywhere without a spread model)."""
        if self.spread_model is None:
            return np.ones(len(frame))
        x = np.column_stack([self.features.dense(frame), values])
        return np.maximum(self.spread_model.predict(x), self.spread_floor)

    def calibrate(self, frame, responses, held_out, truths):
        y = np.asarray(responses, dtype=float)
        if self.family != "baseline" and len(y) >= 2 * FOLDS:
            x, oof = self._matrix(frame), np.zeros(len(y))
            for fit_rows, out_rows in KFold(FOLDS, shuffle=True, random_state=self.seed).split(y):
                oof[out_rows] = self._fit(x[fit_rows], y[fit_rows]).predict(x[out_rows])
            oof = self._values(oof)
            error = np.abs(oof - y)
            if error.sum() > 0:
                self.spread_floor = max(1e-3 * float(np.median(error)), 1e-12)
                self.spread_model = spread_estimator(len(y), self.seed).fit(
                    np.column_stack([self.features.dense(frame), oof]), error
                )
        values = self._values(self._raw(held_out))
        error = np.abs(values - np.asarray(truths, dtype=float))
        self.scores = np.sort(error / self._spread(held_out, values))
        return self

    def _confidence(self, frame, values: np.ndarray) -> np.ndarray:
        """#{held-out scores <= tolerance / spread(x)} / (n + 1), per row."""
        limits = self.tolerance / self._spread(frame, values)
        return np.searchsorted(self.scores, limits, side="right") / (len(self.scores) + 1)

    def predict(self, frame):
        values = self._values(self._raw(frame))
        responses = [int(v) if self.schema.get("type") == "integer" else round(float(v), 4) for v in values]
        return Prediction(responses, self._confidence(frame, values))


class ObjectPredictor(Predictor):
    def fit(self, frame, responses):
        if self.family == "baseline":
            self.constant = {}
            for name in self.schema.get("properties", {}):
                values = [
                    json.dumps(r[name], sort_keys=True) for r in responses if isinstance(r, Mapping) and name in r
                ]
                if values:
                    self.constant[name] = json.loads(Counter(values).most_common(1)[0][0])
        else:
            self.extractor = FieldExtractor(self.schema, self.family, self.seed).fit(
                frame[PROMPT].tolist(), list(responses)
            )
        return self

    def predict(self, frame):
        if self.family == "baseline":
            return Prediction([dict(self.constant) for _ in range(len(frame))], np.zeros(len(frame)))
        out = self.extractor.predict(frame[PROMPT].tolist())
        return Prediction([r for r, _ in out], np.array([c for _, c in out]))


class TextPredictor(Predictor):
    def fit(self, frame, responses):
        self.answers = [str(r) for r in responses]
        self.most_frequent = Counter(self.answers).most_common(1)[0][0]
        if self.family == "knn":
            self.k = max(1, min(int(self.params["k"]), len(self.answers)))
            self.index = NearestNeighbors(n_neighbors=self.k).fit(self.features.dense(frame))
        return self

    def predict(self, frame):
        if self.family == "baseline":
            return Prediction([self.most_frequent] * len(frame), np.zeros(len(frame)))
        _, idx = self.index.kneighbors(self.features.dense(frame))
        responses, confidence = [], []
        for row in idx:
            # ties go to the answer of the nearer neighbour (most_common is stable in insertion order)
            answer, n = Counter(self.answers[i] for i in row).most_common(1)[0]
            responses.append(answer)
            confidence.append(n / len(row))
        return Prediction(responses, np.asarray(confidence))


PREDICTORS = {"enum": EnumPredictor, "number": NumberPredictor, "object": ObjectPredictor, "text": TextPredictor}


class ResponseModel:
    """The served contract: item columns in, responses valid against the schema out, each with a confidence.

    It renders the bundled template itself, so callers send the item's columns, never a prompt.
    """

    def __init__(self, template: CompiledTemplate, kind: str, columns: FeatureColumns, predictor: Predictor):
        self.template, self.kind, self.columns, self.predictor = template, kind, columns, predictor

    @property
    def family(self) -> str:
        return self.predictor.family

    @property
    def input_columns(self) -> list[str]:
        return input_columns(self.template, self.columns)

    def inputs_of(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The input columns of `frame`, with the resolved image files beside them when it has them."""
        files = [image_file_column(c) for c in self.columns.images if image_file_column(c) in frame.columns]
        return frame[[*self.input_columns, *files]]

    def predict_frame(self, frame: pd.DataFrame) -> Prediction:
        return self.predictor.predict(with_prompt(self.template, self.columns, frame.reset_index(drop=True)))

    def predict(self, frame: pd.DataFrame) -> list[dict]:
        """[{"response": value, "confidence": float}] for each row of `frame` (item columns)."""
        return self.answer(frame)[0]

    def answer(self, frame: pd.DataFrame) -> tuple[list[dict], list[str]]:
        """`predict` plus the prompt rendered for each row (what the serving process logs)."""
        prompted = with_prompt(self.template, self.columns, frame.reset_index(drop=True))
        p = self.predictor.predict(prompted)
        answers = [
            {"response": r, "confidence": round(float(c), 6)} for r, c in zip(p.responses, p.confidence, strict=True)
        ]
        return answers, prompted[PROMPT].tolist()


def input_columns(template: CompiledTemplate, columns: FeatureColumns) -> list[str]:
    """Item columns a request must carry: the template's variables and the model's feature columns."""
    return sorted({*template.variables.values(), *columns.required})


def with_prompt(template: CompiledTemplate, columns: FeatureColumns, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` plus the PROMPT column (system and user text rendered in the sandbox), checking the inputs."""
    expected = input_columns(template, columns)
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(f"missing input columns: {', '.join(missing)} (expected {', '.join(expected)})")
    renderer = template.renderer()
    return frame.assign(**{PROMPT: ["\n".join(renderer.render(row)) for row in frame.to_dict("records")]})


def fit_family(
    kind: str,
    family: str,
    template: CompiledTemplate,
    columns: FeatureColumns,
    features: ItemFeatures | None,
    train: pd.DataFrame,
    responses: Sequence,
    params: Mapping,
    seed: int,
) -> ResponseModel:
    """Fit one family on `train` (which already holds the PROMPT column)."""
    predictor = PREDICTORS[kind](family, template.response_schema, features, params, seed).fit(train, responses)
    return ResponseModel(template, kind, columns, predictor)
