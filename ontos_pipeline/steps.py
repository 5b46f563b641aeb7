"""Steps: the bodies of assets (with their checks), run where the target's `compute` resource says.

`@step("sheet", checks=...)` under `@asset` registers the body in `STEPS` and adds a `compute` resource parameter.
An asset's checks run in its step, right after the body, on the data it just wrote: one Spark session and (on
Databricks) one run per asset, instead of one per check. Locally `InProcessCompute` calls the body in the run's
process with the run's resources. On Databricks the orchestrator only submits: `DatabricksCompute` sends the step
name, partition and config through Pipes, and the entry point on the cluster calls the same registered body with
the cluster's resources (`ontos_pipeline.databricks.entrypoint`).
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Config,
    ConfigurableResource,
    MaterializeResult,
)

STEPS: dict[str, Callable[..., Any]] = {}


class ComputeResource(ConfigurableResource, ABC):
    """Where step bodies run."""

    @abstractmethod
    def execute(self, context, key: str, body: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call `body(context, **kwargs)` (step `key`) here or elsewhere; return its result."""


class InProcessCompute(ComputeResource):
    """Run the body in this process (the local target, and the entry point on a Databricks cluster), with native
    thread pools sized for the runs sharing the machine; a step that lost the local Spark engine says so."""

    def execute(self, context, key: str, body: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        from ontos_pipeline.spark_session import engine_lost
        from ontos_pipeline.threads import limited, step_threads

        try:
            with limited(step_threads()):
                return body(context, **kwargs)
        except Exception as exc:
            lost = engine_lost(exc)
            if lost is not None:
                raise lost from exc
            raise


@dataclass(frozen=True)
class Check:
    """An asset check evaluated in its asset's step; `body(context, **resources) -> AssetCheckResult`."""

    name: str
    description: str
    body: Callable[..., AssetCheckResult]
    blocking: bool = True


def check_specs(asset: str, checks: Sequence[Check], partitions) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(c.name, asset=asset, description=c.description, blocking=c.blocking,
                           partitions_def=partitions) for c in checks]


def _with_checks(key: str, body: Callable[..., Any], checks: Sequence[Check]) -> Callable[..., Any]:
    """`body`, then its checks (each given the resources it names), their results attached to the result."""
    if not checks:
        return body
    names = set(inspect.signature(body).parameters)
    params = {c.name: set(inspect.signature(c.body).parameters) for c in checks}
    for c in checks:
        extra = params[c.name] - names
        if extra:
            raise TypeError(f"check {c.name} of step {key} needs {sorted(extra)}, which the step does not take")

    @functools.wraps(body)
    def run(context, **kwargs):
        result = body(context, **kwargs)
        evaluations = []
        for c in checks:
            wanted = {n: v for n, v in kwargs.items() if n in params[c.name]}
            try:
                r = c.body(context, **wanted)
            except Exception as exc:  # the asset's data is written: record the check as failed, not the asset
                context.log.error(f"check {c.name} of {key} raised {type(exc).__name__}: {exc}")
                evaluations.append(AssetCheckResult(check_name=c.name, passed=False, severity=AssetCheckSeverity.ERROR,
                                                    description=f"the check could not run: {type(exc).__name__}: "
                                                                f"{exc}"))
                continue
            evaluations.append(AssetCheckResult(check_name=c.name, passed=r.passed, severity=r.severity,
                                                description=r.description, metadata=r.metadata))
        return MaterializeResult(metadata=result.metadata, data_version=result.data_version,
                                 check_results=evaluations)

    return run


def step(key: str, checks: Sequence[Check] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `body` (followed by `checks`) as step `key` and route its calls through the `compute` resource."""

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        full = _with_checks(key, body, checks)
        if key in STEPS and STEPS[key].__qualname__ != full.__qualname__:
            raise ValueError(f"step {key!r} is registered twice ({STEPS[key].__qualname__}, {full.__qualname__})")
        STEPS[key] = full

        @functools.wraps(body)
        def run(context, compute: ComputeResource, **kwargs):
            return compute.execute(context, key, full, kwargs)

        signature = inspect.signature(body)
        compute_param = inspect.Parameter("compute", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                          annotation=ComputeResource)
        run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), compute_param])
        run.__annotations__ = {**getattr(body, "__annotations__", {}), "compute": ComputeResource}
        return run

    return decorate


def config_payload(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The run config values of a step call (its `Config` arguments) as JSON for the remote side."""
    return {name: value.model_dump() for name, value in kwargs.items()
            if isinstance(value, Config) and not isinstance(value, ConfigurableResource)}


def config_arguments(body: Callable[..., Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the `Config` arguments of `body` from `config_payload` output."""
    hints = inspect.signature(body).parameters
    out = {}
    for name, values in payload.items():
        annotation = hints[name].annotation
        if isinstance(annotation, str):  # postponed annotations
            annotation = body.__globals__[annotation]
        out[name] = annotation(**values)
    return out
