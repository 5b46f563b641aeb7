"""IMPROVE stage: a monitoring breach acts (the breach sensor's logic).

Monitoring opens one alert per breached metric (`monitor.alerts`). A breach that says the model may be wrong —
drift of an input the model reads, accuracy or the thumbs-up rate below the spec's minimum — acts once, when the
spec's `retrain.on_breach` is `act`: with at least `retrain.breach_min_new_labels` labels newer than the served
model's training run (labels it has not learned from) it requests a `retrain` run; with fewer it requests an
`improve` run, whose gap report finds the drifted region and opens annotation tasks for it, so people label what
a retrain needs. The run key names the alerts acted on and the sensor's cursor keeps them while they stay active,
so a breach acts exactly once however often the sensor ticks (a new breach after a resolved one is a new alert).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ontos_pipeline.deploy.endpoints import history
from ontos_pipeline.monitor.alerts import ACTIVE, ALERTS
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.train.trainer.features import FeatureColumns

RETRAIN_JOB, IMPROVE_JOB = "retrain", "improve"
MODEL_KINDS = ("accuracy", "feedback")  # breaches about the answers themselves


@dataclass(frozen=True)
class BreachAction:
    use_case: str
    alert_ids: tuple[str, ...]
    job: str  # RETRAIN_JOB | IMPROVE_JOB
    new_labels: int
    reason: str

    @property
    def run_key(self) -> str:
        return f"breach:{self.use_case}:{','.join(self.alert_ids)}"

    @property
    def tags(self) -> dict[str, str]:
        return {
            "ontos/trigger": "monitoring_breach",
            "ontos/alerts": ",".join(self.alert_ids),
            "ontos/new_labels": str(self.new_labels),
        }


@dataclass(frozen=True)
class BreachDecisions:
    actions: list[BreachAction]
    cursor: list[str]  # ids of active alerts already acted on
    reasons: list[str] = field(default_factory=list)


CURSOR_KEY = "@breaches"  # in the retrain sensor's cursor, next to the per-use-case feedback marks


def parse_cursor(text: str | None) -> set[str]:
    return set(json.loads(text).get(CURSOR_KEY, [])) if text else set()


def acts_on(spec: UseCaseSpec, alert: Mapping) -> bool:
    """Whether an alert is a breach the spec acts on: drift of an input the model reads, accuracy or thumbs-up."""
    if spec.retrain.on_breach != "act":
        return False
    if alert["kind"] in MODEL_KINDS:
        return True
    if alert["kind"] != "drift":
        return False
    metric = json.loads(alert.get("evidence") or "{}").get("metric", "")
    column = metric.removeprefix("psi[").removesuffix("]")
    return column in FeatureColumns.of(spec).required


def new_labels(lakehouse: Lakehouse, spec: UseCaseSpec) -> int:
    """Items whose label arrived after the served model's training run (all labelled items before any model) and
    may be trained on."""
    served = [e for e in history(lakehouse, spec.name) if e.get("served_version")]
    trained_at: datetime | None = None
    if served:
        runs = lakehouse.records(
            tables.TRAINING_RUNS,
            {"use_case": spec.name, "model_version": str(served[-1]["served_version"])},
            columns=["created_at"],
        )
        trained_at = min((r["created_at"] for r in runs), default=None)
    rows = lakehouse.records(
        tables.CANONICAL_LABELS,
        {"sheet_id": spec.name, "label_type": spec.labels.label_type},
        columns=["item_ref", "created_at", "prohibited_uses"],
    )
    return len(
        {
            r["item_ref"]
            for r in rows
            if (trained_at is None or _aware(r["created_at"]) > _aware(trained_at))
            and "training" not in (r["prohibited_uses"] or [])
        }
    )


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def evaluate_breaches(
    lakehouse: Lakehouse, specs: Mapping[str, UseCaseSpec], acted: set[str], covered: set[str] = frozenset()
) -> BreachDecisions:
    """One action per use case with active alerts not acted on yet, none for the `covered` use cases (a retrain is
    requested or running: it acts on the breach); the cursor keeps acted ids while the alerts stay active."""
    if not lakehouse.exists(ALERTS):
        return BreachDecisions([], [], ["no alerts yet"])
    active = [a for a in lakehouse.records(ALERTS) if a["status"] in ACTIVE]
    still = {a["alert_id"] for a in active} & acted
    actions, reasons = [], []
    for name, spec in sorted(specs.items()):
        fresh = sorted(
            (a for a in active if a["use_case"] == name and a["alert_id"] not in acted and acts_on(spec, a)),
            key=lambda a: a["alert_id"],
        )
        if not fresh:
            continue
        ids = tuple(a["alert_id"] for a in fresh)
        what = "; ".join(a["message"] for a in fresh)
        still |= set(ids)
        if name in covered:
            reasons.append(f"{name}: {what} -> covered by the retrain requested or running")
            continue
        count = new_labels(lakehouse, spec)
        if count >= spec.retrain.breach_min_new_labels:
            job = RETRAIN_JOB
            reason = f"{name}: {what} -> retrain ({count} new labels >= {spec.retrain.breach_min_new_labels})"
        else:
            job = IMPROVE_JOB
            reason = (
                f"{name}: {what} -> annotation tasks for the drifted region ({count} new labels < "
                f"{spec.retrain.breach_min_new_labels} needed to retrain)"
            )
        actions.append(BreachAction(name, ids, job, count, reason))
        reasons.append(reason)
    return BreachDecisions(actions, sorted(still), reasons or ["no new breach to act on"])
