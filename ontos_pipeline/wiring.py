"""What the code location is made of, without side effects: the assets (building them registers the step bodies)
and the resources step bodies use. Imported by the definitions and by the Databricks entry point, which must not
need the orchestrator's packages or credentials."""

from __future__ import annotations

import os

from dagster import StaticPartitionsDefinition

from ontos_pipeline.assets.data import build_data_assets
from ontos_pipeline.assets.deploy import build_deploy_assets
from ontos_pipeline.assets.feedback import build_feedback_assets
from ontos_pipeline.assets.gaps import build_gap_assets
from ontos_pipeline.assets.generate import build_generate_assets
from ontos_pipeline.assets.label import build_label_assets
from ontos_pipeline.assets.model import build_model_assets
from ontos_pipeline.assets.monitor import build_monitor_assets
from ontos_pipeline.assets.train import build_export_assets
from ontos_pipeline.databricks.config import volume_from_env
from ontos_pipeline.resources.databricks import (
    DatabricksMlflowResource,
    DatabricksServingResource,
    UnityCatalogLakehouseResource,
)
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.mlflow import LocalMlflowResource
from ontos_pipeline.resources.serving import LocalServingResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.resources.trainer import LocalTrainerResource
from ontos_pipeline.settings import Settings
from ontos_pipeline.specs import load_use_cases
from ontos_pipeline.steps import InProcessCompute


def build_assets(settings: Settings) -> list:
    """Every asset and check of the code location (building them registers the step bodies)."""
    partitions = StaticPartitionsDefinition(list(load_use_cases(settings.use_cases_dir)))
    return [*build_data_assets(partitions), *build_generate_assets(partitions), *build_label_assets(partitions),
            *build_export_assets(partitions), *build_model_assets(partitions), *build_deploy_assets(partitions),
            *build_monitor_assets(partitions), *build_feedback_assets(partitions), *build_gap_assets(partitions)]


def data_plane_resources(settings: Settings) -> dict:
    """Resources the step bodies use, for the target named in `settings` (also built on Databricks clusters)."""
    use_cases = UseCasesResource(directory=str(settings.use_cases_dir))
    common = {"spark": SparkResource(), "use_cases": use_cases, "trainer": LocalTrainerResource()}
    if settings.target == "databricks":
        volume = volume_from_env(settings.catalog, settings.schema, os.environ)
        endpoints = [spec.serving.endpoint_name for spec in use_cases.all().values()]
        lakehouse = UnityCatalogLakehouseResource(catalog=settings.catalog, schema_name=settings.schema,
                                                  volume=volume, endpoints=endpoints)
        mlflow_store = DatabricksMlflowResource(catalog=settings.catalog, schema_name=settings.schema)
        serving = DatabricksServingResource(mlflow_store=mlflow_store, lakehouse=lakehouse)
        return {**common, "lakehouse": lakehouse, "mlflow_store": mlflow_store, "serving": serving}
    lakehouse = LocalLakehouseResource(home=str(settings.home), catalog=settings.catalog,
                                       schema_name=settings.schema)
    mlflow_store = LocalMlflowResource(home=str(settings.home), catalog=settings.catalog, schema_name=settings.schema)
    serving = LocalServingResource(mlflow_store=mlflow_store, lakehouse=lakehouse, port=settings.serve_port)
    return {**common, "lakehouse": lakehouse, "mlflow_store": mlflow_store, "serving": serving,
            "compute": InProcessCompute()}
