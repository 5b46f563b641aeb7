"""Trainer resource: which backend fits the models (the local scikit-learn trainer by default)."""

from __future__ import annotations

from dagster import ConfigurableResource

from ontos_pipeline.trainer.local import LocalTrainer, Trainer


class LocalTrainerResource(ConfigurableResource):
    """Fits baseline and model families in-process (DESIGN.md §5). `max_rows` caps each split's rows."""

    max_train_rows: int = 200_000
    max_eval_rows: int = 100_000

    def get(self, seed: int = 0) -> Trainer:
        return LocalTrainer(seed)
