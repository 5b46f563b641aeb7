"""MLflow resource: tracking, artifacts and the model registry."""

from __future__ import annotations

from dagster import ConfigurableResource

from ontos_pipeline.stages.model_store import ModelStore, local_store


class LocalMlflowResource(ConfigurableResource):
    """MLflow with a SQLite store and file artifacts under `<home>/mlflow` (the embedded default)."""

    home: str
    catalog: str = "ontos"
    schema_name: str = "workbench"

    def get(self) -> ModelStore:
        return local_store(self.home, self.catalog, self.schema_name).activate()
