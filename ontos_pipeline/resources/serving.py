"""Serving resource: deploy and roll back endpoints (locally: the `champion` alias the serving process watches)."""

from __future__ import annotations

from dagster import ConfigurableResource

from ontos_pipeline.resources.lakehouse import LocalLakehouseResource
from ontos_pipeline.resources.mlflow import LocalMlflowResource
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.stages import deploy as deploy_stage
from ontos_pipeline.stages.deploy import EndpointEvent


class LocalServingResource(ConfigurableResource):
    """Endpoints of the local serving process (`ontos serve`) on 127.0.0.1."""

    mlflow_store: LocalMlflowResource
    lakehouse: LocalLakehouseResource
    host: str = "127.0.0.1"
    port: int = 8765

    def url(self, spec: UseCaseSpec) -> str:
        return f"http://{self.host}:{self.port}/serving-endpoints/{spec.serving.endpoint_name}/invocations"

    def deploy(self, spec: UseCaseSpec, gate_passed: bool | None, gate_summary: str, actor: str) -> EndpointEvent:
        return deploy_stage.deploy(self.mlflow_store.get(), self.lakehouse.get(), spec.name,
                                   spec.serving.endpoint_name, gate_passed, gate_summary, actor)

    def rollback(self, spec: UseCaseSpec, actor: str, to_version: str | None = None) -> EndpointEvent:
        return deploy_stage.rollback(self.mlflow_store.get(), self.lakehouse.get(), spec.name,
                                     spec.serving.endpoint_name, actor, to_version)
