"""The Pipes entry point of every Databricks run: call one registered step with the cluster's resources.

The orchestrator sends the step name, the partition, the step's run config and the settings as Pipes extras.
Settings the cluster's own environment defines win (that is how a runtime points steps at its catalog). The step
body is the same function the local target calls in-process (`ontos_pipeline.pipeline.STEPS`); its result goes
back as a Pipes materialization or check result, with the metadata converted value by value.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    PipesBufferedFilesystemMessageWriterChannel,
    PipesCliArgsParamsLoader,
    PipesContextData,
    PipesContextLoader,
    PipesDbfsMessageWriter,
    PipesEnvVarParamsLoader,
    PipesParams,
    open_dagster_pipes,
)

from ontos_pipeline.platform.files import fuse_path


class FuseContextLoader(PipesContextLoader):
    """Reads the context file the DBFS or the volumes injector wrote, through the FUSE mount."""

    @contextmanager
    def load_context(self, params: PipesParams) -> Iterator[PipesContextData]:
        with open(fuse_path(params["path"]), encoding="utf-8") as handle:
            yield json.load(handle)


class FuseMessageWriter(PipesDbfsMessageWriter):
    """Writes message chunks where the DBFS or the volumes message reader looks for them."""

    def make_channel(self, params: PipesParams) -> PipesBufferedFilesystemMessageWriterChannel:
        return PipesBufferedFilesystemMessageWriterChannel(path=fuse_path(params["path"]), interval=self.interval)

    def get_opened_extras(self):
        try:  # where the cluster delivers its driver logs (classic clusters with log delivery), for Dagster to read
            return super().get_opened_extras()
        except Exception:
            return {}


@dataclass
class StepContext:
    """What step bodies use of a Dagster execution context."""

    partition_key: str
    run_id: str
    log: Any


def call_step(key: str, partition: str, run_id: str, config: Mapping[str, Any], log) -> Any:
    """Run step `key` for one partition in this process, as the local target would."""
    from ontos_pipeline.pipeline import step
    from ontos_pipeline.resources.targets import data_plane_resources
    from ontos_pipeline.settings import load_settings

    found = step(key)
    resources = data_plane_resources(load_settings())
    missing = [name for name in found.resources if name not in resources]
    if missing:
        raise KeyError(f"step {key!r} needs {missing}, which the cluster's resources do not provide")
    kwargs = {name: resources[name] for name in found.resources} | found.config_arguments(config)
    return found.run(StepContext(partition, run_id, log), kwargs)


def report(pipes, key: str, result: Any) -> None:
    from dagster import MaterializeResult

    from ontos_pipeline.databricks.metadata import DESCRIPTION_KEY, to_external

    if not isinstance(result, MaterializeResult):
        raise TypeError(f"step {key!r} returned {type(result).__name__}, not a MaterializeResult")
    pipes.report_asset_materialization(
        metadata=to_external(result.metadata or {}),
        asset_key=key,
        data_version=result.data_version.value if result.data_version else None,
    )
    for check in result.check_results or []:
        metadata = dict(check.metadata or {})
        if check.description:
            metadata[DESCRIPTION_KEY] = check.description
        pipes.report_asset_check(
            check_name=check.check_name,
            passed=check.passed,
            severity=check.severity.value,
            metadata=to_external(metadata),
            asset_key=key,
        )


def main(bundle: str | None = None) -> None:
    cli = PipesCliArgsParamsLoader()
    params_loader = cli if cli.is_dagster_pipes_process() else PipesEnvVarParamsLoader()
    if params_loader is not cli and DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        sys.exit("ontos step entry point: no Dagster Pipes context (run it through DatabricksCompute)")
    with open_dagster_pipes(
        params_loader=params_loader, context_loader=FuseContextLoader(), message_writer=FuseMessageWriter(interval=1)
    ) as pipes:
        for name, value in (pipes.get_extra("settings") or {}).items():
            os.environ.setdefault(name, str(value))
        if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
            _runtime_session(bundle)
        key = pipes.get_extra("step")
        result = call_step(key, pipes.get_extra("partition"), pipes.run_id, pipes.get_extra("config") or {}, pipes.log)
        report(pipes, key, result)


def _runtime_session(bundle: str | None) -> None:
    """Start (or attach to) the Databricks runtime's Spark session before any step code asks for one, so the
    steps use it as it is configured, and make our modules importable by Python UDFs on the executors."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    if not bundle:
        return
    try:
        spark.sparkContext.addPyFile(bundle)
    except Exception:  # Spark Connect (serverless) has no SparkContext: ship it as an artifact
        spark.addArtifacts(bundle, pyfile=True)
