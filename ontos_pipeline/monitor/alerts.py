"""Alerts raised by monitoring, with their lifecycle open -> acknowledged -> resolved.

One open (or acknowledged) alert per use case and metric: a breach that persists across reports updates nothing
and raises nothing new, so people see one alert per problem, not one per report.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse

ALERTS = tables.ALERTS
ACTIVE = ("open", "acknowledged")
TRANSITIONS = {"acknowledged": ("open",), "resolved": ("open", "acknowledged")}


class AlertError(ValueError):
    """An alert transition that is not allowed (the message names the alert and its state)."""


@dataclass(frozen=True)
class Breach:
    """A metric beyond its threshold in one monitoring report."""

    kind: str  # drift | error_rate | latency | accuracy | feedback
    metric: str
    value: float
    threshold: float
    comparison: str  # ">=" | ">" | "<"

    @property
    def message(self) -> str:
        return f"{self.metric} = {self.value:.4g} {self.comparison} threshold {self.threshold:g}"


def raise_alerts(lakehouse: Lakehouse, use_case: str, breaches: list[Breach], report_id: str) -> list[dict]:
    """Open an alert for each breach that has no active alert yet; returns the alerts opened."""
    with lakehouse.locked(ALERTS):
        active = {
            json.loads(a["evidence"] or "{}").get("metric")
            for a in lakehouse.records(ALERTS, {"use_case": use_case})
            if a["status"] in ACTIVE
        }
        now = datetime.now(UTC)
        new = [
            {
                "alert_id": uuid.uuid4().hex[:12],
                "use_case": use_case,
                "kind": b.kind,
                "severity": "error",
                "message": b.message,
                "status": "open",
                "created_at": now,
                "evidence": json.dumps(
                    {"metric": b.metric, "value": b.value, "threshold": b.threshold, "report_id": report_id}
                ),
            }
            for b in breaches
            if b.metric not in active
        ]
        if new:
            lakehouse.append_records(ALERTS, new)
    return new


def list_alerts(lakehouse: Lakehouse, use_case: str | None = None, status: str | None = None) -> list[dict]:
    where = {k: v for k, v in (("use_case", use_case), ("status", status)) if v}
    return sorted(lakehouse.records(ALERTS, where), key=lambda a: a["created_at"], reverse=True)


def transition(lakehouse: Lakehouse, alert_id: str, to: str, actor: str) -> dict:
    """Acknowledge or resolve one alert (by id or unique id prefix)."""
    if to not in TRANSITIONS:
        raise AlertError(f"unknown alert state {to!r}; use acknowledged or resolved")
    with lakehouse.locked(ALERTS):
        found = [a for a in lakehouse.records(ALERTS) if a["alert_id"].startswith(alert_id)]
        if len(found) != 1:
            raise AlertError(
                f"no alert {alert_id!r}"
                if not found
                else f"{alert_id!r} matches {len(found)} alerts; give more of the id"
            )
        alert = found[0]
        if alert["status"] not in TRANSITIONS[to]:
            raise AlertError(
                f"alert {alert['alert_id']} is {alert['status']}; only "
                f"{' or '.join(TRANSITIONS[to])} alerts can become {to}"
            )
        stamp = "acknowledged_at" if to == "acknowledged" else "resolved_at"
        values = {"status": to, "actor": actor, stamp: datetime.now(UTC)}
        lakehouse.update_records(ALERTS, {"alert_id": alert["alert_id"]}, values)
    return {**alert, **values}
