"""Lakehouse and use-case resources."""

from __future__ import annotations

from functools import lru_cache

from dagster import ConfigurableResource

from ontos_pipeline.lakehouse import Lakehouse, LocalLakehouse
from ontos_pipeline.specs import UseCaseSpec, load_use_cases


class LocalLakehouseResource(ConfigurableResource):
    """Delta tables under `<home>/tables` (the embedded default)."""

    home: str
    catalog: str = "ontos"
    schema_name: str = "workbench"

    def get(self) -> Lakehouse:
        return LocalLakehouse.under(self.home, self.catalog, self.schema_name)


class UseCasesResource(ConfigurableResource):
    """The use-case specs (one YAML file each) that partition every asset."""

    directory: str

    def all(self) -> dict[str, UseCaseSpec]:
        return _load(self.directory)

    def get(self, name: str) -> UseCaseSpec:
        specs = self.all()
        if name not in specs:
            raise KeyError(f"unknown use case {name!r}; known: {', '.join(specs)}")
        return specs[name]


@lru_cache(maxsize=8)
def _load(directory: str) -> dict[str, UseCaseSpec]:
    return load_use_cases(directory)
