"""Which implementation of each resource a target uses: one builder per ONTOS_TARGET, in one table."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ontos_pipeline.resources.base import NotifierResource, SparkResource, UseCasesResource
from ontos_pipeline.settings import Settings, SettingsError


def local_resources(settings: Settings) -> dict:
    from ontos_pipeline.resources.local import (
        InProcessCompute,
        LocalLakehouseResource,
        LocalMlflowResource,
        LocalServingResource,
        LocalTrainerResource,
    )

    home = str(settings.home)
    lakehouse = LocalLakehouseResource(home=home, catalog=settings.catalog, schema_name=settings.schema)
    mlflow_store = LocalMlflowResource(home=home, catalog=settings.catalog, schema_name=settings.schema)
    return {
        **_shared(settings),
        "lakehouse": lakehouse,
        "mlflow_store": mlflow_store,
        "serving": LocalServingResource(port=settings.serve_port),
        "trainer": LocalTrainerResource(),
        "compute": InProcessCompute(),
        "notifier": _notifier(settings, settings.home / "files" / "notifications"),
    }


def databricks_resources(settings: Settings) -> dict:
    """Unity Catalog, the workspace MLflow and Model Serving; steps run in this process (a cluster's entry point).
    The orchestrator replaces `compute` with the Pipes client (`orchestrator_resources`)."""
    from ontos_pipeline.databricks.config import volume_from_env
    from ontos_pipeline.platform.files import fuse_path
    from ontos_pipeline.resources.databricks import (
        DatabricksMlflowResource,
        DatabricksServingResource,
        UnityCatalogLakehouseResource,
    )
    from ontos_pipeline.resources.local import InProcessCompute, LocalTrainerResource

    shared = _shared(settings)
    volume = volume_from_env(settings.catalog, settings.schema, os.environ)
    endpoints = [spec.serving.endpoint_name for spec in shared["use_cases"].all().values()]
    lakehouse = UnityCatalogLakehouseResource(
        catalog=settings.catalog, schema_name=settings.schema, volume=volume, endpoints=endpoints
    )
    mlflow_store = DatabricksMlflowResource(catalog=settings.catalog, schema_name=settings.schema)
    return {
        **shared,
        "lakehouse": lakehouse,
        "mlflow_store": mlflow_store,
        "serving": DatabricksServingResource(catalog=settings.catalog, schema_name=settings.schema),
        "trainer": LocalTrainerResource(),
        "compute": InProcessCompute(),
        # steps on a cluster keep their outbox in the volume (the cluster's environment holds the channels' secrets)
        "notifier": _notifier(settings, fuse_path(f"{volume}/notifications")),
    }


TARGETS: dict[str, Callable[[Settings], dict]] = {"local": local_resources, "databricks": databricks_resources}


def data_plane_resources(settings: Settings) -> dict:
    """The resources step bodies run with, for `settings.target` (also built inside Databricks runs)."""
    return TARGETS[settings.target](settings)


def orchestrator_resources(settings: Settings) -> dict:
    """The code location's resources: on Databricks, steps are submitted as runs (credentials checked here, by
    presence only: no client is built and nothing goes over the network until a step runs)."""
    if settings.target != "databricks":
        return data_plane_resources(settings)
    from ontos_pipeline.databricks.compute import DatabricksCompute  # the Pipes client: orchestrator only
    from ontos_pipeline.databricks.config import DatabricksConfigError, load_databricks_config

    try:
        config = load_databricks_config(settings.catalog, settings.schema)
    except DatabricksConfigError as exc:
        raise SettingsError(str(exc)) from None
    return {
        **data_plane_resources(settings),
        "compute": DatabricksCompute.from_config(config, settings.use_cases_dir),
        # the sensors run here, not on a cluster: their outbox is the orchestrator's own
        "notifier": _notifier(settings, settings.home / "notifications"),
    }


def _notifier(settings: Settings, outbox: Path | str) -> NotifierResource:
    return NotifierResource(outbox_dir=str(outbox), dagster_url=settings.dagster_url)


def _shared(settings: Settings) -> dict:
    return {"spark": SparkResource(), "use_cases": UseCasesResource(directory=str(settings.use_cases_dir))}
