"""Run a step on Databricks through dagster-databricks Pipes and turn what it reports into Dagster results.

One Databricks run per step: the task is the bootstrap script on the volume (`bundle.py`), which runs
`entrypoint.main` with the Pipes context. A job cluster gets its Pipes parameters as Spark environment variables,
an existing cluster and serverless get them as task parameters (handled by dagster-databricks).

The Pipes clients are wrapped to close the known gaps: a run that fails or is cancelled fails the step with the
run's URL and state message, a run that outlives `run_timeout_seconds` is cancelled, and a run that ends
"successfully" without reporting a result (the remote process died before Pipes opened) fails the step too.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, MaterializeResult, MetadataValue
from dagster_databricks.pipes import PipesDatabricksClient, PipesDatabricksServerlessClient
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import DatabricksError, NotFound
from databricks.sdk.service import compute as dbx_compute
from databricks.sdk.service import jobs
from pydantic import Field

from ontos_pipeline.databricks.bundle import Bundle, build_bundle, cluster_requirements
from ontos_pipeline.databricks.config import DatabricksConfig
from ontos_pipeline.databricks.metadata import DESCRIPTION_KEY
from ontos_pipeline.databricks.serving import server_message
from ontos_pipeline.resources.base import ComputeResource
from ontos_pipeline.steps import Step

# dagster-databricks 0.29 calls preview Pipes APIs of its own dagster release on every run: not ours to act on
warnings.filterwarnings("ignore", message=r"Function `Pipes(Session|MessageReader)\.")
ENVIRONMENT_KEY = "ontos"
DEADLINE_GRACE_SECONDS = 300


class StepRunError(RuntimeError):
    """A Databricks run of a step failed, was cancelled, timed out or never reported."""


class _WatchedRun:
    """Replaces the clients' polling: URL and reason in every failure, a deadline, cancellation on timeout."""

    timeout_seconds: float

    def _poll_til_success(self, context, run_id: int) -> None:
        run = self.client.jobs.get_run(run_id)
        url = run.run_page_url or f"run {run_id}"
        context.log.info(f"Databricks run {run_id} submitted: {url}")
        # Databricks ends the run at `timeout_seconds`; this deadline is the backstop when it does not
        deadline, last = time.monotonic() + self.timeout_seconds + DEADLINE_GRACE_SECONDS, None
        while True:
            state = self._get_run_state(run_id)
            if state.life_cycle_state != last:
                context.log.info(f"Databricks run {run_id}: {state.life_cycle_state.value}")
                last = state.life_cycle_state
            if state.life_cycle_state in (jobs.RunLifeCycleState.TERMINATED, jobs.RunLifeCycleState.SKIPPED):
                if state.result_state == jobs.RunResultState.SUCCESS:
                    return
                result = state.result_state.value if state.result_state else state.life_cycle_state.value
                raise StepRunError(
                    f"Databricks run {run_id} ended {result}: {state.state_message or 'no message'} ({url})"
                )
            if state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR:
                raise StepRunError(f"Databricks run {run_id} hit an internal error: {state.state_message} ({url})")
            if time.monotonic() > deadline:
                self.client.jobs.cancel_run(run_id)
                self._poll_til_terminating(run_id)
                raise StepRunError(
                    f"Databricks run {run_id} was still {state.life_cycle_state.value} "
                    f"{DEADLINE_GRACE_SECONDS} s after its timeout of {self.timeout_seconds:.0f} s "
                    f"(ONTOS_DATABRICKS_RUN_TIMEOUT); it was cancelled ({url})"
                )
            time.sleep(self.poll_interval_seconds)


class WatchedClassicClient(_WatchedRun, PipesDatabricksClient):
    def __init__(self, client: WorkspaceClient, timeout_seconds: float, **kwargs):
        super().__init__(client, **kwargs)
        self.timeout_seconds = timeout_seconds


class WatchedServerlessClient(_WatchedRun, PipesDatabricksServerlessClient):
    def __init__(self, client: WorkspaceClient, volume_path: str, timeout_seconds: float, **kwargs):
        super().__init__(client, volume_path, **kwargs)
        self.timeout_seconds = timeout_seconds


@cache
def _bundle(use_cases_dir: str) -> Bundle:
    return build_bundle(Path(use_cases_dir))


class DatabricksCompute(ComputeResource):
    """Steps run as Databricks runs. Holds no credentials: the client reads them from the environment when the
    first step runs (never at definitions load)."""

    catalog: str
    schema_name: str
    volume: str
    use_cases_dir: str
    compute: str = "job_cluster"
    cluster_id: str | None = None
    spark_version: str
    node_type: str
    workers: int = 1
    run_timeout_seconds: int = 3600
    poll_seconds: float = 10.0
    extra_libraries: list[str] = Field(default_factory=list)

    @classmethod
    def from_config(cls, config: DatabricksConfig, use_cases_dir: Path) -> DatabricksCompute:
        fields = asdict(config)
        fields["schema_name"] = fields.pop("schema")  # `schema` is taken by pydantic models
        return cls(**fields, use_cases_dir=str(use_cases_dir))

    def workspace(self) -> WorkspaceClient:
        return WorkspaceClient()  # unified auth from DATABRICKS_* variables or the config profile

    # -- what gets submitted ---------------------------------------------------------------------------------
    def upload_code(self, client: WorkspaceClient) -> Bundle:
        """Put the bundle and its bootstrap on the volume unless a run already did (they are content-named)."""
        bundle = _bundle(self.use_cases_dir)
        try:
            client.files.get_metadata(bundle.bootstrap_path(self.volume))
            return bundle
        except NotFound:
            pass
        client.files.create_directory(f"{self.volume}/code")
        client.files.upload(bundle.path(self.volume), io.BytesIO(bundle.data), overwrite=True)
        client.files.upload(
            bundle.bootstrap_path(self.volume), io.BytesIO(bundle.bootstrap(self.volume).encode()), overwrite=True
        )  # last: its presence means both files are complete
        return bundle

    def task(self, bundle: Bundle, key: str) -> jobs.SubmitTask:
        python = jobs.SparkPythonTask(python_file=bundle.bootstrap_path(self.volume), parameters=[])
        if self.compute == "serverless":
            return jobs.SubmitTask(task_key=key, spark_python_task=python, environment_key=ENVIRONMENT_KEY)
        libraries = [
            dbx_compute.Library(pypi=dbx_compute.PythonPyPiLibrary(package=r))
            for r in cluster_requirements(tuple(self.extra_libraries))
        ]
        if self.compute == "existing_cluster":
            return jobs.SubmitTask(
                task_key=key, spark_python_task=python, existing_cluster_id=self.cluster_id, libraries=libraries
            )
        cluster = dbx_compute.ClusterSpec(
            spark_version=self.spark_version,
            node_type_id=self.node_type,
            num_workers=self.workers,
            data_security_mode=dbx_compute.DataSecurityMode.SINGLE_USER,  # Unity Catalog access
            spark_env_vars={"ONTOS_TARGET": "databricks"},
        )
        return jobs.SubmitTask(task_key=key, spark_python_task=python, new_cluster=cluster, libraries=libraries)

    def submit_args(self, context, key: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "run_name": f"ontos {key} [{context.partition_key}] {context.run_id[:8]}",
            "timeout_seconds": self.run_timeout_seconds,
        }
        if self.compute == "serverless":
            args["environments"] = [
                jobs.JobEnvironment(
                    environment_key=ENVIRONMENT_KEY,
                    spec=dbx_compute.Environment(
                        environment_version="2", dependencies=cluster_requirements(tuple(self.extra_libraries))
                    ),
                )
            ]
        return args

    def extras(self, context, step: Step, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": step.key,
            "partition": context.partition_key,
            "config": step.config_payload(kwargs),
            "settings": {
                "ONTOS_TARGET": "databricks",
                "ONTOS_CATALOG": self.catalog,
                "ONTOS_SCHEMA": self.schema_name,
                "ONTOS_DATABRICKS_VOLUME": self.volume,
            },
        }

    # -- running ---------------------------------------------------------------------------------------------
    def execute(self, context, step: Step, kwargs: dict[str, Any]) -> Any:
        key = step.key
        client = self.workspace()
        try:
            bundle = self.upload_code(client)
        except DatabricksError as exc:
            raise StepRunError(
                f"step {key}: cannot upload the code bundle to {self.volume}/code: "
                f"{server_message(exc)}. Check that the volume exists and that you have READ VOLUME "
                "and WRITE VOLUME on it"
            ) from None
        pipes = (
            WatchedServerlessClient(
                client, f"{self.volume}/pipes", self.run_timeout_seconds, poll_interval_seconds=self.poll_seconds
            )
            if self.compute == "serverless"
            else WatchedClassicClient(client, self.run_timeout_seconds, poll_interval_seconds=self.poll_seconds)
        )
        try:
            invocation = pipes.run(
                context=context,
                extras=self.extras(context, step, kwargs),
                task=self.task(bundle, key),
                submit_args=self.submit_args(context, key),
            )
        except DatabricksError as exc:
            raise StepRunError(f"step {key}: the Databricks API refused the request: {server_message(exc)}") from None
        results = invocation.get_results(implicit_materializations=False)  # no silent "success"
        url = invocation.metadata.get("Databricks Job Run URL")
        where = url.value if isinstance(url, MetadataValue) else "no run URL"
        if not results:
            raise StepRunError(
                f"step {key} for {context.partition_key}: the Databricks run ended without reporting a"
                f" result (the step process died before Dagster Pipes opened, or never called it); "
                f"see the run's driver logs ({where})"
            )
        materialization = next((r for r in results if isinstance(r, MaterializeResult)), None)
        if materialization is None:
            raise StepRunError(f"step {key}: the run reported checks but no materialization ({where})")
        return MaterializeResult(
            asset_key=materialization.asset_key,
            metadata=materialization.metadata,
            data_version=materialization.data_version,
            check_results=[_check_result(r) for r in results if isinstance(r, AssetCheckResult)],
        )


def _check_result(result: AssetCheckResult) -> AssetCheckResult:
    metadata = dict(result.metadata or {})
    description = metadata.pop(DESCRIPTION_KEY, None)
    text = description.value if isinstance(description, MetadataValue) else description
    return AssetCheckResult(
        asset_key=result.asset_key,
        check_name=result.check_name,
        passed=result.passed,
        severity=result.severity,
        metadata=metadata,
        description=text,
    )
