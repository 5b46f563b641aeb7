"""The trainer interface and the local trainer (scikit-learn, in-process; DESIGN.md §5).

A trainer turns the dual-gated training rows of a use case into candidate models: the trivial baseline first,
then the stronger families of the response kind, each fitted on the train split and scored on the validation
split; the best on validation wins. A linear family's candidate is the best on validation of a coordinate search
over its small default grid (`models.GRID`: with or without the prompt's TF-IDF at the default regularization,
then the regularization; enum points compete on log loss, number points on the gate metric), its choices in its
params. When the spec asks for it, an Optuna search (seeded) tunes the best family. Number candidates then
calibrate their per-row confidence on the validation split (models.py).
A remote backend (the Databricks issue) implements the same `Trainer.train`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from ontos_pipeline.generate.template import CompiledTemplate
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.train.trainer.features import FeatureColumns, ItemFeatures
from ontos_pipeline.train.trainer.models import (
    FAMILIES,
    GRID,
    PROMPT_PARAM,
    SEARCH_SPACE,
    ResponseModel,
    fit_family,
    with_prompt,
)
from ontos_pipeline.train.trainer.scoring import better, log_loss, score

RESPONSE = "response"  # column of parsed JSON responses in the training frames


@dataclass(frozen=True)
class TrainingData:
    """Item columns plus RESPONSE (parsed JSON) for the train and validation splits."""

    train: pd.DataFrame
    val: pd.DataFrame


@dataclass
class CandidateRun:
    family: str
    params: dict
    metrics: dict  # on the validation split
    headline: float
    seconds: float
    model: ResponseModel


@dataclass
class TrainingOutcome:
    metric: str
    candidates: list[CandidateRun]
    best: CandidateRun
    search: dict = field(default_factory=dict)  # trials, best params, parameter importances (when searched)

    @property
    def baseline(self) -> CandidateRun:
        return next(c for c in self.candidates if c.family == "baseline")


class Trainer(Protocol):
    name: str

    def train(self, spec: UseCaseSpec, template: CompiledTemplate, data: TrainingData) -> TrainingOutcome: ...


class LocalTrainer:
    """Fits every family of the response kind on the driver with scikit-learn."""

    name = "local"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def train(self, spec: UseCaseSpec, template: CompiledTemplate, data: TrainingData) -> TrainingOutcome:
        kind, metric = spec.template.response_kind, spec.training.gate.metric
        for split, frame in (("train", data.train), ("val", data.val)):
            if frame.empty:
                raise ValueError(
                    f"{spec.name}: the {split} split has no trainable rows; label and approve more "
                    "items (or change training.split) before training"
                )
        columns = FeatureColumns.of(spec)
        train, val = (
            with_prompt(template, columns, data.train.reset_index(drop=True)),
            with_prompt(template, columns, data.val.reset_index(drop=True)),
        )
        features = ItemFeatures(columns, self.seed, spec.training.image_size).fit(train)
        with features.cached(train, val):
            return self._candidates(spec, template, kind, metric, columns, features, train, val)

    def _candidates(self, spec, template, kind, metric, columns, features, train, val) -> TrainingOutcome:
        def run(family: str, params: Mapping) -> CandidateRun:
            started = time.perf_counter()
            model = fit_family(
                kind, family, template, columns, features, train, train[RESPONSE].tolist(), params, self.seed
            )
            prediction = model.predictor.predict(val)
            scores = score(kind, val[RESPONSE].tolist(), prediction, template.response_schema)
            if kind == "enum":
                scores["log_loss"] = log_loss(val[RESPONSE].tolist(), prediction)
            return CandidateRun(
                family,
                dict(model.predictor.params),
                scores,
                float(scores[metric]),
                time.perf_counter() - started,
                model,
            )

        def grid(family: str) -> CandidateRun:
            """Coordinate search of the family's grid: each axis in turn, the others fixed at their best so far.

            Enum grid points compete on validation log loss: smoother than accuracy or F1 on a small validation
            split, and it rewards calibrated confidences (which gap finding and pre-labelling rank by)."""
            space = _space(GRID.get(family, {}), features.structured)
            best = run(family, {name: values[0] for name, values in space.items()})
            seconds = best.seconds
            for name, values in space.items():
                for value in values[1:]:
                    challenger = run(family, {**{k: best.params[k] for k in space}, name: value})
                    seconds += challenger.seconds
                    if kind == "enum":
                        best = challenger if challenger.metrics["log_loss"] < best.metrics["log_loss"] else best
                    else:
                        best = _best([best, challenger], metric)
            best.seconds = seconds
            return best

        candidates = [grid(family) for family in FAMILIES[kind]]
        best = _best(candidates, metric)
        search: dict = {}
        trials = spec.training.search_trials
        space = _space(SEARCH_SPACE.get(best.family, {}), features.structured)
        if trials and best.family != "baseline" and space:
            tuned, search = _search(run, best.family, space, metric, trials, self.seed)
            candidates.append(tuned)
            best = _best(candidates, metric)
        for c in {id(c): c for c in (best, *[c for c in candidates if c.family == "baseline"])}.values():
            # the served candidates only (the winner; the baseline is logged with its pyfunc for the evaluation)
            started = time.perf_counter()
            c.model.predictor.calibrate(train, train[RESPONSE].tolist(), val, val[RESPONSE].tolist())
            c.seconds += time.perf_counter() - started
        return TrainingOutcome(metric, candidates, best, search)


def _space(space: Mapping, structured: bool) -> dict:
    """`space` without the prompt choice when the prompt is the only feature (no feature columns)."""
    return {k: v for k, v in space.items() if structured or k != PROMPT_PARAM}


def _best(candidates: list[CandidateRun], metric: str) -> CandidateRun:
    best = candidates[0]
    for c in candidates[1:]:
        if better(metric, c.headline, best.headline):
            best = c
    return best


def _search(run, family: str, space: Mapping, metric: str, trials: int, seed: int) -> tuple[CandidateRun, dict]:
    """Optuna TPE search over the family's space; returns the best trial's run and a summary."""
    import optuna

    from ontos_pipeline.train.metrics import HIGHER_IS_BETTER

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[int, CandidateRun] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {}
        for name, bounds in space.items():
            if isinstance(bounds, list):
                params[name] = trial.suggest_categorical(name, bounds)
            elif len(bounds) == 3:
                params[name] = trial.suggest_float(name, bounds[0], bounds[1], log=bounds[2])
            else:
                params[name] = trial.suggest_int(name, bounds[0], bounds[1])
        runs[trial.number] = run(family, params)
        return runs[trial.number].headline

    study = optuna.create_study(
        direction="maximize" if HIGHER_IS_BETTER[metric] else "minimize", sampler=optuna.samplers.TPESampler(seed=seed)
    )
    study.optimize(objective, n_trials=trials)
    tuned = runs[study.best_trial.number]
    tuned.family = f"{family}_tuned"
    try:
        importances = {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # fewer than two completed trials or a single distinct value
        importances = {}
    return tuned, {
        "family": family,
        "trials": len(study.trials),
        "best_params": study.best_params,
        "best_value": study.best_value,
        "importances": importances,
    }
