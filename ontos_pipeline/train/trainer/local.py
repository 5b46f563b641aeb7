"""The trainer interface and the local trainer (scikit-learn, in-process; DESIGN.md §5).

A trainer turns the dual-gated training rows of a use case into candidate models: the trivial baseline first,
then the stronger families of the response kind, each fitted on the train split and scored on the validation
split; the best on validation wins. When the spec asks for it, an Optuna search (seeded) tunes the best family.
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
from ontos_pipeline.train.trainer.models import FAMILIES, SEARCH_SPACE, ResponseModel, fit_family, with_prompt
from ontos_pipeline.train.trainer.scoring import better, score

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
        features = ItemFeatures(columns, self.seed).fit(train)

        def run(family: str, params: Mapping) -> CandidateRun:
            started = time.perf_counter()
            model = fit_family(
                kind, family, template, columns, features, train, train[RESPONSE].tolist(), params, self.seed
            )
            prediction = model.predictor.predict(val)
            scores = score(kind, val[RESPONSE].tolist(), prediction, template.response_schema)
            return CandidateRun(
                family,
                dict(model.predictor.params),
                scores,
                float(scores[metric]),
                time.perf_counter() - started,
                model,
            )

        candidates = [run(family, {}) for family in FAMILIES[kind]]
        best = _best(candidates, metric)
        search: dict = {}
        trials = spec.training.search_trials
        if trials and best.family != "baseline" and SEARCH_SPACE.get(best.family):
            tuned, search = _search(run, best.family, metric, trials, self.seed)
            candidates.append(tuned)
            best = _best(candidates, metric)
        return TrainingOutcome(metric, candidates, best, search)


def _best(candidates: list[CandidateRun], metric: str) -> CandidateRun:
    best = candidates[0]
    for c in candidates[1:]:
        if better(metric, c.headline, best.headline):
            best = c
    return best


def _search(run, family: str, metric: str, trials: int, seed: int) -> tuple[CandidateRun, dict]:
    """Optuna TPE search over the family's space; returns the best trial's run and a summary."""
    import optuna

    from ontos_pipeline.train.metrics import HIGHER_IS_BETTER

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[int, CandidateRun] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {}
        for name, bounds in SEARCH_SPACE[family].items():
            if len(bounds) == 3:
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
