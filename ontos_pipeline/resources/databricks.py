"""The Databricks target's data plane: Unity Catalog tables, the workspace MLflow with the UC registry, and Model
Serving. The resources hold names only (no credentials) and build clients when a step uses them."""

from __future__ import annotations

from pydantic import Field

from ontos_pipeline.deploy.endpoints import EndpointEvent
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import ModelStore, databricks_store
from ontos_pipeline.resources.base import LakehouseResource, ModelStoreResource, ServingResource
from ontos_pipeline.specs import UseCaseSpec


class UnityCatalogLakehouseResource(LakehouseResource):
    """Delta tables in `<catalog>.<schema>`; files in the volume; endpoints' payload tables as `inference_log`."""

    catalog: str
    schema_name: str
    volume: str
    endpoints: list[str] = Field(default_factory=list)

    def get(self) -> Lakehouse:
        from ontos_pipeline.platform.unity_catalog import UnityCatalogLakehouse

        return UnityCatalogLakehouse(self.catalog, self.schema_name, self.volume, self.endpoints)


class DatabricksMlflowResource(ModelStoreResource):
    """MLflow tracking `databricks`, registry `databricks-uc`: models are `<catalog>.<schema>.<use case>`."""

    catalog: str
    schema_name: str

    def get(self) -> ModelStore:
        return databricks_store(self.catalog, self.schema_name).activate()


class DatabricksServingResource(ServingResource):
    """Model Serving endpoints that serve the `champion` version of `<catalog>.<schema>.<use case>` (and, during an
    A/B test, the `ab_challenger` on its share of the traffic), with AI Gateway inference tables in the same schema."""

    catalog: str
    schema_name: str

    def _client(self):
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient()

    def url(self, spec: UseCaseSpec) -> str:
        return f"{self._client().config.host}/serving-endpoints/{spec.serving.endpoint_name}/invocations"

    def publish(self, spec: UseCaseSpec, event: EndpointEvent) -> None:
        from ontos_pipeline.databricks.serving import sync_endpoint

        if event.served_version is None:  # nothing passed the gate yet: no endpoint to create
            return
        model = databricks_store(self.catalog, self.schema_name).model_name(spec.name)
        sync_endpoint(
            self._client(),
            spec.serving.endpoint_name,
            model,
            event.served_version,
            catalog=self.catalog,
            schema=self.schema_name,
            guardrails=spec.serving.guardrails,  # AI Gateway guardrails and rate limits as the use case declares
            # an A/B test: the arm as a second served entity with its share of the traffic; otherwise the champion
            # gets every request (a promoted or ended test goes back to one entity)
            challenger=event.challenger_version if event.split else None,
            challenger_percent=event.challenger_percent if event.split else 0,
        )
