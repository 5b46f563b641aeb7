"""Steps: the bodies of assets and checks, run where the target's `compute` resource says.

`@step("sheet")` under `@asset` registers the body in `STEPS` and adds a `compute` resource parameter. Locally
`InProcessCompute` calls the body in the run's process with the run's resources. On Databricks the orchestrator
only submits: `DatabricksCompute` sends the step name, partition and config through Pipes, and the entry point on
the cluster calls the same registered body with the cluster's resources (`ontos_pipeline.databricks.entrypoint`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from dagster import Config, ConfigurableResource

STEPS: dict[str, Callable[..., Any]] = {}


class ComputeResource(ConfigurableResource):
    """Where step bodies run."""

    def execute(self, context, key: str, body: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError


class InProcessCompute(ComputeResource):
    """Run the body in this process (the local target, and the entry point on a Databricks cluster)."""

    def execute(self, context, key: str, body: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        return body(context, **kwargs)


def step(key: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `body` as step `key` and route its calls through the `compute` resource."""

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        if key in STEPS and STEPS[key].__qualname__ != body.__qualname__:
            raise ValueError(f"step {key!r} is registered twice ({STEPS[key].__qualname__}, {body.__qualname__})")
        STEPS[key] = body

        @functools.wraps(body)
        def run(context, compute: ComputeResource, **kwargs):
            return compute.execute(context, key, body, kwargs)

        signature = inspect.signature(body)
        compute_param = inspect.Parameter("compute", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                          annotation=ComputeResource)
        run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), compute_param])
        run.__annotations__ = {**getattr(body, "__annotations__", {}), "compute": ComputeResource}
        return run

    return decorate


def config_payload(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The run config values of a step call (its `Config` arguments) as JSON for the remote side."""
    return {name: value.model_dump() for name, value in kwargs.items() if isinstance(value, Config)}


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
