"""DEPLOY assets: the serving endpoint follows the promotion gate."""

from __future__ import annotations

import json
from dataclasses import asdict

from dagster import AssetExecutionContext, DataVersion, MaterializeResult

from ontos_pipeline.deploy import ab_test, endpoints
from ontos_pipeline.deploy.trace import endpoint_trace
from ontos_pipeline.metadata import md_table
from ontos_pipeline.notify.messages import gate_notice, kept_key
from ontos_pipeline.platform.model_store import CHALLENGER
from ontos_pipeline.resources.base import (
    LakehouseResource,
    ModelStoreResource,
    NotifierResource,
    ServingResource,
    UseCasesResource,
)
from ontos_pipeline.steps import Step
from ontos_pipeline.train.evaluation import GateResult, stored_evaluation


def serving_endpoint(
    context: AssetExecutionContext,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
    serving: ServingResource,
    notifier: NotifierResource,
) -> MaterializeResult:
    spec, lh, store = use_cases.get(context.partition_key), lakehouse.get(), mlflow_store.get()
    challenger = store.version(spec.name, CHALLENGER)
    stored = challenger and stored_evaluation(lh, spec.name, challenger.version)
    gate = GateResult.from_rules(bool(stored["gate_passed"]), json.loads(stored["gate_details"])) if stored else None
    event = endpoints.deploy(
        store,
        lh,
        spec.name,
        spec.serving.endpoint_name,
        None if gate is None else gate.passed,
        gate.summary() if gate else "",
        f"dagster run {context.run_id}",
        spec.serving.ab_test,
    )
    serving.publish(spec, event)
    if event.event == "keep":
        context.log.warning(f"{spec.serving.endpoint_name}: {event.reason}")
    # told: a deploy, and a champion kept because the challenger failed its gate (not a re-run that changed nothing);
    # an A/B test once when it starts (a test that goes on is not told again) and once when it ends
    key = f"gate:{event.event_id}" if event.event == "deploy" else None
    if event.event == "keep" and gate is not None and not gate.passed:
        key = kept_key(spec.name, challenger.version)
    if event.event == "split":
        key = f"gate:split:{spec.name}:{event.challenger_version}"
    if event.event == "keep" and event.challenger_version and event.challenger_percent == 0:
        key = f"gate:ab-ended:{spec.name}:{event.challenger_version}"
    if key:
        notice = gate_notice(
            notifier.dagster_url,
            context.run_id,
            key,
            use_case=spec.name,
            endpoint=event.endpoint_name,
            decision=event.event,
            served_version=event.served_version,
            previous_version=event.previous_version,
            reason=event.reason,
            rules=[asdict(r) for r in gate.rules] if gate else [],
            challenger_version=event.challenger_version if event.split else None,
            challenger_percent=event.challenger_percent if event.split else None,
        )
        notifier.get(context.log).notify(spec.notifications, notice)
    return MaterializeResult(
        data_version=DataVersion(
            f"{event.endpoint_name}@{event.served_version}"
            + (f"+{event.challenger_version}:{event.challenger_percent}%" if event.split else "")
        ),
        metadata={
            "endpoint": event.endpoint_name,
            "event": event.event,
            "served_version": event.served_version or "none",
            "previous_version": event.previous_version or "none",
            **_ab_metadata(lh, store, spec, event),
            "reason": event.reason,
            "actor": event.actor,
            "deployed_at": event.created_at.isoformat(),
            "url": serving.url(spec),
            "try_it": f"uv run ontos serve  # then: curl -s {serving.url(spec)} -H 'Content-Type: application/json' "
            "-d '{\"dataframe_records\": [{...item columns...}]}'",
            **endpoint_trace(lh, store, spec.name, event.served_version),
        },
    )


def _ab_metadata(lh, store, spec, event: endpoints.EndpointEvent) -> dict:
    """The A/B arm after the event and, while a test runs, its comparison so far (nothing without a test)."""
    if not event.split:
        return {}
    out: dict = {"challenger_version": event.challenger_version, "challenger_percent": event.challenger_percent}
    comparison = endpoints.ab_comparison(store, lh, spec.name, spec.serving.endpoint_name, spec.serving.ab_test)
    if comparison is not None:
        out["ab_test"] = md_table(ab_test.comparison_rows(comparison), ab_test.TABLE_COLUMNS)
        out["ab_verdict"] = comparison.verdict
    return out


SERVING_ENDPOINT = Step(
    "serving_endpoint",
    serving_endpoint,
    group="deploy",
    deps=("model_evaluation",),
    kinds=frozenset({"mlflow"}),
    description="The endpoint serves the champion: a challenger that passed the promotion gate becomes champion; "
    "otherwise the champion stays and the metadata says why. Every decision is an event in "
    "serving_endpoints.",
)
