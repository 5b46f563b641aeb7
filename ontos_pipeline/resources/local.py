"""The embedded default: Delta tables and files under ONTOS_HOME, MLflow with a SQLite store, the local serving
process, steps in the run's own process and the scikit-learn trainer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ontos_pipeline.deploy.endpoints import EndpointEvent
from ontos_pipeline.platform.lakehouse import Lakehouse, LocalLakehouse
from ontos_pipeline.platform.model_store import ModelStore, local_store
from ontos_pipeline.resources.base import (
    ComputeResource,
    LakehouseResource,
    ModelStoreResource,
    ServingResource,
    TrainerResource,
)
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.steps import Step
from ontos_pipeline.train.trainer.local import LocalTrainer, Trainer


class LocalLakehouseResource(LakehouseResource):
    """Delta tables under `<home>/tables`, files under `<home>/files`."""

    home: str

    def get(self) -> Lakehouse:
        return LocalLakehouse.under(self.home, self.catalog, self.schema_name)


class LocalMlflowResource(ModelStoreResource):
    """MLflow with a SQLite store and file artifacts under `<home>/mlflow`."""

    home: str

    def get(self) -> ModelStore:
        return local_store(self.home, self.catalog, self.schema_name).activate()


class LocalServingResource(ServingResource):
    """Endpoints of the local serving process (`ontos serve`) on 127.0.0.1, which follows the `champion` alias."""

    host: str = "127.0.0.1"
    port: int = 8765

    def url(self, spec: UseCaseSpec) -> str:
        return f"http://{self.host}:{self.port}/serving-endpoints/{spec.serving.endpoint_name}/invocations"

    def publish(self, spec: UseCaseSpec, event: EndpointEvent) -> None:
        """Nothing to do: the serving process reloads an endpoint when its `champion` alias moves."""


class InProcessCompute(ComputeResource):
    """Run the step in this process (the local target, and the entry point on a Databricks cluster), with native
    thread pools sized for the runs sharing the machine; a step that lost the local Spark engine says so."""

    def execute(self, context, step: Step, kwargs: Mapping[str, Any]) -> Any:
        from ontos_pipeline.platform.spark_session import engine_lost
        from ontos_pipeline.platform.threads import limited, step_threads

        try:
            with limited(step_threads()):
                return step.run(context, kwargs)
        except Exception as exc:
            lost = engine_lost(exc)
            if lost is not None:
                raise lost from exc
            raise


class LocalTrainerResource(TrainerResource):
    """Fits baseline and model families in-process (DESIGN.md §5), on either target's compute."""

    def get(self, seed: int = 0) -> Trainer:
        return LocalTrainer(seed)
