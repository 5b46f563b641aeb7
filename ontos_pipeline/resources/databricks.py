"""Resources of the Databricks target's data plane: Unity Catalog tables, the workspace MLflow with the UC
registry, and Model Serving. They hold names only (no credentials) and build clients when a step uses them."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ontos_pipeline.lakehouse import Lakehouse
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.stages import deploy as deploy_stage
from ontos_pipeline.stages.deploy import EndpointEvent
from ontos_pipeline.stages.model_store import ModelStore, databricks_store


class UnityCatalogLakehouseResource(ConfigurableResource):
    """Delta tables in `<catalog>.<schema>`; files in the volume; endpoints' payload tables as `inference_log`."""

    catalog: str
    schema_name: str
    volume: str
    endpoints: list[str] = Field(default_factory=list)

    def get(self) -> Lakehouse:
        from ontos_pipeline.databricks.unity_catalog import UnityCatalogLakehouse

        return UnityCatalogLakehouse(self.catalog, self.schema_name, self.volume, self.endpoints)


class DatabricksMlflowResource(ConfigurableResource):
    """MLflow tracking `databricks`, registry `databricks-uc`: models are `<catalog>.<schema>.<use case>`."""

    catalog: str
    schema_name: str

    def get(self) -> ModelStore:
        return databricks_store(self.catalog, self.schema_name).activate()


class DatabricksServingResource(ConfigurableResource):
    """Model Serving endpoints that serve the `champion` version, with AI Gateway inference tables."""

    mlflow_store: DatabricksMlflowResource
    lakehouse: UnityCatalogLakehouseResource

    def _client(self):
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient()

    def url(self, spec: UseCaseSpec) -> str:
        return f"{self._client().config.host}/serving-endpoints/{spec.serving.endpoint_name}/invocations"

    def _sync(self, spec: UseCaseSpec, event: EndpointEvent) -> EndpointEvent:
        from ontos_pipeline.databricks.serving import sync_endpoint

        if event.served_version is None:  # nothing passed the gate yet: no endpoint to create
            return event
        store = self.mlflow_store.get()
        sync_endpoint(self._client(), spec.serving.endpoint_name, store.model_name(spec.name), event.served_version,
                      catalog=self.lakehouse.catalog, schema=self.lakehouse.schema_name)
        return event

    def deploy(self, spec: UseCaseSpec, gate_passed: bool | None, gate_summary: str, actor: str) -> EndpointEvent:
        event = deploy_stage.deploy(self.mlflow_store.get(), self.lakehouse.get(), spec.name,
                                    spec.serving.endpoint_name, gate_passed, gate_summary, actor)
        return self._sync(spec, event)

    def rollback(self, spec: UseCaseSpec, actor: str, to_version: str | None = None) -> EndpointEvent:
        event = deploy_stage.rollback(self.mlflow_store.get(), self.lakehouse.get(), spec.name,
                                      spec.serving.endpoint_name, actor, to_version)
        return self._sync(spec, event)
