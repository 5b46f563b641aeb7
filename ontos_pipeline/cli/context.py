"""What every command starts from: the settings and the local data plane they name, built without importing the
Dagster code location (read-only commands stay free of pyspark, Dagster, MLflow and pandas)."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ontos_pipeline.settings import Settings, load_settings
from ontos_pipeline.specs import SpecError, UseCaseSpec, load_use_cases

if TYPE_CHECKING:
    from ontos_pipeline.platform.lakehouse import LocalLakehouse


@dataclass
class Context:
    settings: Settings

    @classmethod
    def load(cls) -> Context:
        return cls(load_settings())

    @cached_property
    def specs(self) -> dict[str, UseCaseSpec]:
        return load_use_cases(self.settings.use_cases_dir)

    def spec(self, use_case: str) -> UseCaseSpec:
        if use_case not in self.specs:
            raise SpecError(
                self.settings.use_cases_dir, "", f"unknown use case {use_case!r}; known: {', '.join(self.specs)}"
            )
        return self.specs[use_case]

    @cached_property
    def lakehouse(self) -> LocalLakehouse:
        return self.settings.local_lakehouse()

    def model_store(self):
        """The local MLflow store (imports MLflow)."""
        return self.settings.local_model_store()


def person(explicit: str | None = None) -> str:
    """Who acts: the option given, else $ONTOS_USER, else the login name."""
    return explicit or os.environ.get("ONTOS_USER") or getpass.getuser()


def short(value: object, width: int = 60) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
