"""Deploy decisions: the `champion` alias follows the promotion gate; every decision is an endpoint event.

Locally an endpoint serves whatever version `champion` points to (the serving process watches the alias), so
deploying or rolling back is moving that alias and recording the event in `serving_endpoints`.

With `serving.ab_test.challenger_percent` > 0, a challenger that passed its gate while a champion serves is not
promoted: it becomes the `ab_challenger` (event `split`, the endpoint serves it on that share of the requests), and
a later deploy concludes the test with `ab_test.compare` over the requests since the split started: promoted (event
`deploy`) when not worse with enough requests in both arms, ended (event `keep`, the arm recorded with percent 0 so
it is not tested again) when worse beyond noise, otherwise the split stays (another `split` event). A newer
challenger that passes replaces the arm; a rollback ends the test. Every event says what the endpoint serves after
it: `served_version`, and `challenger_version` on `challenger_percent` of the requests (percent 0 or null: none).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ontos_pipeline.deploy import ab_test
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import AB_CHALLENGER, CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from ontos_pipeline.platform.model_store import ModelStore
    from ontos_pipeline.specs import AbTestSpec

ENDPOINTS = tables.SERVING_ENDPOINTS


class DeployError(RuntimeError):
    """A deploy or rollback cannot be done; the message says what to do."""


@dataclass(frozen=True)
class EndpointEvent:
    event_id: str
    endpoint_name: str
    use_case: str
    event: str  # deploy | keep | rollback | split
    served_version: str | None
    previous_version: str | None
    reason: str
    actor: str
    created_at: datetime
    challenger_version: str | None = None  # the A/B arm after the event (with percent 0: its test ended)
    challenger_percent: int | None = None

    @property
    def split(self) -> bool:
        """The endpoint serves `challenger_version` on `challenger_percent` of the requests after this event."""
        return bool(self.challenger_version and self.challenger_percent)

    def record(self) -> dict:
        return asdict(self)


def _event(
    endpoint: str,
    use_case: str,
    event: str,
    served: str | None,
    previous: str | None,
    reason: str,
    actor: str,
    arm: tuple[str | None, int | None] = (None, None),
) -> EndpointEvent:
    return EndpointEvent(
        uuid.uuid4().hex, endpoint, use_case, event, served, previous, reason, actor, datetime.now(UTC), *arm
    )


def deploy(
    store: ModelStore,
    lakehouse: Lakehouse,
    use_case: str,
    endpoint: str,
    gate_passed: bool | None,
    gate_summary: str,
    actor: str,
    ab: AbTestSpec | None = None,
) -> EndpointEvent:
    """Promote the challenger when its gate passed, otherwise keep the champion; record the event either way.
    With an active `ab` (the use case's `serving.ab_test`) and a champion, a passing challenger is A/B tested
    first (module docstring).

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
        version = str(challenger.version)
        percent = ab.challenger_percent if ab is not None and ab.active else 0
        arm = store.version(use_case, AB_CHALLENGER)
        running = str(arm.version) if arm else None
        if running and (not percent or running == current):  # A/B turned off, or the arm is served already
            store.delete_alias(use_case, AB_CHALLENGER)
            running = None
        carried = (running, percent) if running else (None, None)

        def keep(reason: str) -> EndpointEvent:  # the champion (and a running A/B arm) stay
            return _event(endpoint, use_case, "keep", current, current, reason, actor, carried)

        if not gate_passed:
            reason = f"gate failed for version {version}: {gate_summary}"
            if running:
                reason += f"; the A/B test of version {running} goes on ({percent}% of requests)"
            event = keep(reason + ("" if current else "; nothing is served until a version passes"))
        elif current == version:
            event = keep(f"version {current} is already the {CHAMPION}")
        elif current is not None and percent and _ended(lakehouse, use_case, version):
            event = keep(f"version {version} lost its A/B test against version {current}; train a new challenger")
        elif current is not None and percent and running != version:
            store.set_alias(use_case, AB_CHALLENGER, version)
            reason = (
                f"gate passed: {gate_summary}; A/B test: version {version} answers {percent}% of requests "
                f"next to the {CHAMPION} version {current}"
            )
            if running:
                reason += f" (replaces the arm under test, version {running})"
            event = _event(endpoint, use_case, "split", current, current, reason, actor, (version, percent))
        elif current is not None and percent:
            assert ab is not None
            event = _conclude(store, lakehouse, use_case, endpoint, ab, actor, current, version, None)
        else:
            store.set_alias(use_case, CHAMPION, version)
            reason = f"gate passed: {gate_summary}"
            if running:
                store.delete_alias(use_case, AB_CHALLENGER)
                reason += f"; the A/B test of version {running} ended"
            event = _event(
                endpoint,
                use_case,
                "deploy",
                version,
                current,
                reason,
                actor,
                (running, 0) if running else (None, None),
            )
        lakehouse.append_records(ENDPOINTS, [event.record()])
        return event


def _ended(lakehouse: Lakehouse, use_case: str, version: str) -> bool:
    """Whether an A/B test of `version` was ended (its arm recorded with percent 0) without it being served."""
    for e in reversed(history(lakehouse, use_case)):
        if e["served_version"] == version:
            return False
        if e.get("challenger_version") == version and e.get("challenger_percent") == 0:
            return True
    return False


def split_started(lakehouse: Lakehouse, use_case: str, version: str) -> datetime | None:
    """When the running A/B test of `version` started: the first `split` event of the events that have served
    it as the arm since (None: no such test)."""
    started = None
    for e in reversed(history(lakehouse, use_case)):
        if e.get("challenger_version") != version or not e.get("challenger_percent"):
            break
        if e["event"] == "split":
            started = e["created_at"]
    return started


def ab_comparison(
    store: ModelStore, lakehouse: Lakehouse, use_case: str, endpoint: str, ab: AbTestSpec
) -> ab_test.Comparison | None:
    """The running A/B test's comparison over the requests since it started; None when no test runs."""
    champion, arm = store.version(use_case, CHAMPION), store.version(use_case, AB_CHALLENGER)
    if champion is None or arm is None or str(arm.version) == str(champion.version):
        return None
    return _comparison(lakehouse, use_case, endpoint, ab, str(champion.version), str(arm.version))


def _comparison(
    lakehouse: Lakehouse, use_case: str, endpoint: str, ab: AbTestSpec, current: str, version: str
) -> ab_test.Comparison:
    """Champion `current` against arm `version` over the requests since the arm's test started."""
    since = split_started(lakehouse, use_case, version)
    stats = ab_test.arm_stats(lakehouse, use_case, endpoint, [current, version], since)
    return ab_test.compare(stats[current], stats[version], ab.min_requests, ab.confidence)


def conclude(
    store: ModelStore,
    lakehouse: Lakehouse,
    use_case: str,
    endpoint: str,
    ab: AbTestSpec,
    actor: str,
    decision: str | None = None,
) -> EndpointEvent:
    """End the running A/B test by hand (`decision` promote | end) or by its comparison (None: promoted when not
    worse with enough requests, ended when worse, else the split stays); records the event."""
    with lakehouse.locked(ENDPOINTS):
        champion, arm = store.version(use_case, CHAMPION), store.version(use_case, AB_CHALLENGER)
        if champion is None or arm is None:
            raise DeployError(f"{use_case} runs no A/B test (no {AB_CHALLENGER} next to a {CHAMPION})")
        event = _conclude(
            store, lakehouse, use_case, endpoint, ab, actor, str(champion.version), str(arm.version), decision
        )
        lakehouse.append_records(ENDPOINTS, [event.record()])
        return event


def _conclude(
    store: ModelStore,
    lakehouse: Lakehouse,
    use_case: str,
    endpoint: str,
    ab: AbTestSpec,
    actor: str,
    current: str,
    version: str,
    decision: str | None,
) -> EndpointEvent:
    comparison = _comparison(lakehouse, use_case, endpoint, ab, current, version)
    summary = comparison.summary()
    by_hand = f" by {actor}" if decision else ""
    if decision == "promote" or (decision is None and comparison.enough and comparison.verdict != ab_test.WORSE):
        store.set_alias(use_case, CHAMPION, version)
        store.delete_alias(use_case, AB_CHALLENGER)
        reason = f"A/B test promoted version {version} over version {current}{by_hand}: {summary}"
        return _event(endpoint, use_case, "deploy", version, current, reason, actor, (version, 0))
    if decision == "end" or (decision is None and comparison.verdict == ab_test.WORSE):
        store.delete_alias(use_case, AB_CHALLENGER)
        reason = f"A/B test ended{by_hand}: version {current} stays, version {version} gets no traffic: {summary}"
        return _event(endpoint, use_case, "keep", current, current, reason, actor, (version, 0))
    percent = ab.challenger_percent
    reason = f"A/B test of version {version} goes on ({percent}% of requests): {summary}"
    return _event(endpoint, use_case, "split", current, current, reason, actor, (version, percent))


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
        arm = store.version(use_case, AB_CHALLENGER)
        reason = f"rolled back from version {current} to {to_version}"
        if arm is not None:  # the rollback ends a running A/B test: everything goes to the version rolled back to
            store.delete_alias(use_case, AB_CHALLENGER)
            reason += f"; the A/B test of version {arm.version} ended"
        event = _event(
            endpoint,
            use_case,
            "rollback",
            to_version,
            current,
            reason,
            actor,
            (str(arm.version), 0) if arm is not None else (None, None),
        )
        lakehouse.append_records(ENDPOINTS, [event.record()])
    return event
