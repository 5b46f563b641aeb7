"""The resource contracts step bodies see: the lakehouse, the model store, serving, compute and the trainer (one
abstract resource per external system), plus the Spark session and the use-case specs, which every target shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from ontos_pipeline.specs import UseCaseSpec, load_use_cases

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from ontos_pipeline.deploy.endpoints import EndpointEvent
    from ontos_pipeline.notify.notifier import Notifier
    from ontos_pipeline.platform.lakehouse import Lakehouse
    from ontos_pipeline.platform.model_store import ModelStore
    from ontos_pipeline.steps import Step
    from ontos_pipeline.train.trainer.local import Trainer


class LakehouseResource(ConfigurableResource, ABC):
    """Tables and files of `<catalog>.<schema>`; everything else is the `Lakehouse` the resource gives."""

    catalog: str = "ontos"
    schema_name: str = "workbench"

    @abstractmethod
    def get(self) -> Lakehouse: ...


class ModelStoreResource(ConfigurableResource, ABC):
    """MLflow tracking and the model registry."""

    catalog: str = "ontos"
    schema_name: str = "workbench"

    @abstractmethod
    def get(self) -> ModelStore: ...


class ServingResource(ConfigurableResource, ABC):
    """Serving endpoints. Which version an endpoint serves is decided in the model store (the `champion` alias,
    `deploy.endpoints`); `publish` makes the target's serving system follow that decision."""

    @abstractmethod
    def url(self, spec: UseCaseSpec) -> str:
        """Where the use case's endpoint answers invocations."""

    @abstractmethod
    def publish(self, spec: UseCaseSpec, event: EndpointEvent) -> None:
        """Serve `event.served_version` at the use case's endpoint (nothing to do where the server follows the
        alias by itself)."""


class ComputeResource(ConfigurableResource, ABC):
    """Where step bodies run."""

    @abstractmethod
    def execute(self, context, step: Step, kwargs: Mapping[str, Any]) -> Any:
        """Run `step` (its body and checks) with `kwargs` here or elsewhere; return its MaterializeResult."""


class TrainerResource(ConfigurableResource, ABC):
    """Fits the baseline and model families. `max_*_rows` cap each split's rows."""

    max_train_rows: int = 200_000
    max_eval_rows: int = 100_000

    @abstractmethod
    def get(self, seed: int = 0) -> Trainer: ...


class SparkResource(ConfigurableResource):
    """The process's Spark session: the warm local engine (`ontos engine status`), or the Databricks runtime's."""

    def session(self) -> SparkSession:
        from ontos_pipeline.platform.spark_session import get_spark

        return get_spark()


class NotifierResource(ConfigurableResource):
    """Notifications (Slack, e-mail, a JSON webhook) with a durable outbox in `outbox_dir`. Which channels hear
    about what is each use case's `notifications` spec; their secrets are read from the environment when a notice
    is sent, so nothing secret is configured here (resource config is shown in the Dagster UI)."""

    outbox_dir: str
    dagster_url: str = "http://127.0.0.1:3000"  # ONTOS_DAGSTER_URL: where the notices' links point

    def get(self, log=None) -> Notifier:
        from ontos_pipeline.notify.notifier import Notifier

        return Notifier(self.outbox_dir, self.dagster_url, log=log)


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
