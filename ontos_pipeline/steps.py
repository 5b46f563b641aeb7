"""Steps: an asset's body and its checks, declared once and run where the target's `compute` resource says.

A stage declares each asset as a `Step`: a module-level body `body(context, **resources) -> MaterializeResult`, its
checks (plain functions of the same resources, evaluated in the step right after the body on the data it just
wrote) and the asset's spec (group, deps, kinds, description, run config). `ontos_pipeline.pipeline.STEPS` lists
every step in one place. `Step.asset` makes the Dagster asset: it names the resources it needs and hands the body
to the `compute` resource, which runs it in this process (local target) or submits it as a Databricks run whose
entry point calls the same `Step.run` with the cluster's resources (`ontos_pipeline.databricks.entrypoint`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetsDefinition,
    Config,
    MaterializeResult,
    PartitionsDefinition,
    asset,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from ontos_pipeline.platform.lakehouse import Lakehouse
    from ontos_pipeline.specs import UseCaseSpec

CONFIG = "config"  # the body parameter that takes the step's run config


@dataclass(frozen=True)
class Check:
    """An asset check evaluated in its asset's step; `body(context, **resources) -> AssetCheckResult`."""

    name: str
    description: str
    body: Callable[..., AssetCheckResult]
    blocking: bool = True


@dataclass(frozen=True)
class Step:
    """One asset: its body, its checks and its spec."""

    key: str
    body: Callable[..., MaterializeResult]
    group: str
    description: str
    deps: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset()
    checks: tuple[Check, ...] = ()
    config: type[Config] | None = None  # the body's `config` parameter

    def __post_init__(self) -> None:
        names = set(self.resources)
        for check in self.checks:
            extra = set(_parameters(check.body)) - names
            if extra:
                raise TypeError(
                    f"check {check.name} of step {self.key} needs {sorted(extra)}, which the step does not take"
                )

    @property
    def resources(self) -> list[str]:
        """The resource keys the body takes, in order."""
        return [name for name in _parameters(self.body) if name != CONFIG]

    def run(self, context, kwargs: Mapping[str, Any]) -> MaterializeResult:
        """The body, then its checks (each given the resources it names), their results attached to the result."""
        result = self.body(context, **kwargs)
        if not self.checks:
            return result
        evaluations = []
        for check in self.checks:
            wanted = {name: kwargs[name] for name in _parameters(check.body)}
            try:
                r = check.body(context, **wanted)
            except Exception as exc:  # the asset's data is written: record the check as failed, not the asset
                context.log.error(f"check {check.name} of {self.key} raised {type(exc).__name__}: {exc}")
                evaluations.append(
                    AssetCheckResult(
                        check_name=check.name,
                        passed=False,
                        severity=AssetCheckSeverity.ERROR,
                        description=f"the check could not run: {type(exc).__name__}: {exc}",
                    )
                )
                continue
            evaluations.append(
                AssetCheckResult(
                    check_name=check.name,
                    passed=r.passed,
                    severity=r.severity,
                    description=r.description,
                    metadata=r.metadata,
                )
            )
        return MaterializeResult(metadata=result.metadata, data_version=result.data_version, check_results=evaluations)

    def check_specs(self, partitions: PartitionsDefinition) -> list[AssetCheckSpec]:
        return [
            AssetCheckSpec(
                c.name, asset=self.key, description=c.description, blocking=c.blocking, partitions_def=partitions
            )
            for c in self.checks
        ]

    def asset(self, partitions: PartitionsDefinition) -> AssetsDefinition:
        """The Dagster asset: gathers the body's resources and run config and hands them to `compute`."""
        step = self

        @asset(
            name=self.key,
            group_name=self.group,
            partitions_def=partitions,
            deps=list(self.deps),
            kinds=set(self.kinds),
            description=self.description,
            check_specs=self.check_specs(partitions),
            required_resource_keys={*self.resources, "compute"},
            config_schema=self.config.to_config_schema() if self.config else None,
        )
        def _asset(context):
            kwargs = {name: getattr(context.resources, name) for name in step.resources}
            if step.config is not None:
                kwargs[CONFIG] = step.config(**(context.op_execution_context.op_config or {}))
            return context.resources.compute.execute(context, step, kwargs)

        return _asset

    def config_payload(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The step's run config as JSON, for a remote entry point."""
        value = kwargs.get(CONFIG)
        return value.model_dump() if isinstance(value, Config) else {}

    def config_arguments(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The body's `config` argument rebuilt from `config_payload` output (none if the step takes no config)."""
        return {} if self.config is None else {CONFIG: self.config(**payload)}


def step_inputs(context, use_cases, spark, lakehouse) -> tuple[UseCaseSpec, SparkSession, Lakehouse]:
    """What most bodies start from: the partition's use case, the Spark session and the lakehouse."""
    return use_cases.get(context.partition_key), spark.session(), lakehouse.get()


def by_key(steps: Sequence[Step]) -> dict[str, Step]:
    out: dict[str, Step] = {}
    for s in steps:
        if s.key in out:
            raise ValueError(f"step {s.key!r} is declared twice")
        out[s.key] = s
    return out


def _parameters(body: Callable[..., Any]) -> list[str]:
    return [name for name in inspect.signature(body).parameters if name != "context"]
