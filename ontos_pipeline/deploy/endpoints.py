"""Deploy decisions: the `champion` alias follows the promotion gate; every decision is an endpoint event.

Locally an endpoint serves whatever version `champion` points to (the serving process watches the alias), so
deploying or rolling back is moving that alias and recording the event in `serving_endpoints`.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from ontos_pipeline.platform.model_store import ModelStore

ENDPOINTS = tables.SERVING_ENDPOINTS


class DeployError(RuntimeError):
    """A deploy or rollback cannot be done; the message says what to do."""


@dataclass(frozen=True)
class EndpointEvent:
    event_id: str
    endpoint_name: str
    use_case: str
    event: str  # deploy | keep | rollback
    served_version: str | None
    previous_version: str | None
    reason: str
    actor: str
    created_at: datetime

    def record(self) -> dict:
        return asdict(self)


def _event(
    endpoint: str, use_case: str, event: str, served: str | None, previous: str | None, reason: str, actor: str
) -> EndpointEvent:
    return EndpointEvent(
        uuid.uuid4().hex, endpoint, use_case, event, served, previous, reason, actor, datetime.now(UTC)
    )


def deploy(
    store: ModelStore,
    lakehouse: Lakehouse,
    use_case: str,
    endpoint: str,
    gate_passed: bool | None,
    gate_summary: str,
    actor: str,
) -> EndpointEvent:
    """Promote the challenger when its gate passed, otherwise keep the champion; record the event either way.

    Idempotent: deploying a challenger that is already champion records a `keep` without moving anything.
    """
    with lakehouse.locked(ENDPOINTS):
        challenger, champion = store.version(use_case, CHALLENGER), store.version(use_case, CHAMPION)
        current = str(champion.version) if champion else None
        if challenger is None:
            raise DeployError(f"no {CHALLENGER} model for {use_case}; materialize trained_model and model_evaluation")
        if gate_passed is None:
            raise DeployError(
                f"{use_case} version {challenger.version} has not been evaluated; materialize model_evaluation first"
            )
        if not gate_passed:
            reason = f"gate failed for version {challenger.version}: {gate_summary}"
            event = _event(
                endpoint,
                use_case,
                "keep",
                current,
                current,
                reason + ("" if current else "; nothing is served until a version passes"),
                actor,
            )
        elif current == str(challenger.version):
            event = _event(
                endpoint, use_case, "keep", current, current, f"version {current} is already the {CHAMPION}", actor
            )
        else:
            store.set_alias(use_case, CHAMPION, challenger.version)
            event = _event(
                endpoint, use_case, "deploy", str(challenger.version), current, f"gate passed: {gate_summary}", actor
            )
        lakehouse.append_records(ENDPOINTS, [event.record()])
        return event


def history(lakehouse: Lakehouse, use_case: str) -> list[dict]:
    """Endpoint events of a use case, oldest first."""
    return sorted(lakehouse.records(ENDPOINTS, {"use_case": use_case}), key=lambda e: e["created_at"])


def rollback(
    store: ModelStore, lakehouse: Lakehouse, use_case: str, endpoint: str, actor: str, to_version: str | None = None
) -> EndpointEvent:
    """Point `champion` back to the version served before the current one (or to `to_version`)."""
    champion = store.version(use_case, CHAMPION)
    if champion is None:
        raise DeployError(f"{use_case} has no {CHAMPION}: nothing is served, so there is nothing to roll back")
    current = str(champion.version)
    if to_version is None:
        deploys = [e for e in history(lakehouse, use_case) if e["event"] == "deploy"]
        last = next((e for e in reversed(deploys) if e["served_version"] == current), None)
        to_version = last and last["previous_version"]
        if not to_version:
            raise DeployError(
                f"{use_case} version {current} has no earlier served version to roll back to; "
                "pass --to VERSION to choose one"
            )
    to_version = str(to_version)
    if to_version == current:
        raise DeployError(f"{use_case} already serves version {current}")
    try:
        store.client().get_model_version(store.model_name(use_case), to_version)
    except Exception:
        raise DeployError(f"{store.model_name(use_case)} has no version {to_version}") from None
    with lakehouse.locked(ENDPOINTS):
        store.set_alias(use_case, CHAMPION, to_version)
        event = _event(
            endpoint,
            use_case,
            "rollback",
            to_version,
            current,
            f"rolled back from version {current} to {to_version}",
            actor,
        )
        lakehouse.append_records(ENDPOINTS, [event.record()])
    return event
