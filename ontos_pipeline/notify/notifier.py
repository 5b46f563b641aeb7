"""Queue a notice for the channels of a use case, then send what is due; nothing here raises into a run.

`Notifier.notify` puts one delivery per wanted channel into the outbox (unless that notice already reached that
channel or waits for it) and flushes; `Notifier.flush` (also run by `notification_retry_sensor`) sends every
pending delivery, oldest first. A delivery that fails stays pending with its error and is retried by the next
flush; once one delivery to a receiver fails, that receiver's other deliveries wait for the next flush too (a
receiver that is down costs one timeout per flush, not one per notice). A delivery pending longer than `MAX_AGE`
is given up with an error line. A channel whose environment variable is unset is skipped with a line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ontos_pipeline.notify import channels
from ontos_pipeline.notify.channels import DeliveryError, Target, Unconfigured
from ontos_pipeline.notify.messages import Notice
from ontos_pipeline.notify.outbox import Outbox, State
from ontos_pipeline.specs import NotificationsSpec

MAX_AGE = timedelta(days=3)
FLUSH_BUDGET_S = 20.0  # a flush stops starting deliveries after this long (a sensor tick has 60 s)
_LOGGER = logging.getLogger("ontos_pipeline.notify")


@dataclass
class Outcome:
    """What one notify or flush did, by delivery id (`<notice key>|<target id>`)."""

    delivered: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # channel not configured in this environment
    given_up: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.delivered)} delivered, {len(self.pending)} pending, {len(self.skipped)} skipped" + (
            f", {len(self.given_up)} given up" if self.given_up else ""
        )


def targets_for(specs: Sequence[NotificationsSpec], event: str) -> list[Target]:
    """The receivers of `event` across `specs`, each once."""
    found: dict[str, Target] = {}
    for spec in specs:
        if event in spec.events:
            for channel in spec.channels:
                target = Target.of(channel)
                found.setdefault(target.id, target)
    return list(found.values())


class Notifier:
    """Sends notices; `log` is any logger with info/warning/error (a Dagster context's `log`, a `logging` one)."""

    def __init__(
        self,
        outbox_dir: Path | str,
        dagster_url: str = "http://127.0.0.1:3000",
        env: Mapping[str, str] | None = None,
        log: Any = None,
        timeout: float = channels.TIMEOUT,
    ):
        self.outbox = Outbox(outbox_dir)
        self.dagster_url = dagster_url.rstrip("/")
        self._env = env
        self.log = log or _LOGGER
        self.timeout = timeout

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env  # read at send time: secrets are never kept

    def notify(self, specs: NotificationsSpec | Sequence[NotificationsSpec], notice: Notice) -> Outcome:
        """Queue `notice` for every channel of `specs` that wants its event, then flush. Never raises."""
        specs = [specs] if isinstance(specs, NotificationsSpec) else list(specs)
        targets = targets_for(specs, notice.event)
        if not targets:
            return Outcome()
        outcome = Outcome()
        try:
            with self.outbox.transaction() as state:
                for target in targets:
                    delivery = f"{notice.key}|{target.id}"
                    if not self._configured(target):
                        outcome.skipped.append(delivery)
                        continue
                    if state.is_known(delivery):
                        self.log.info(f"notification {notice.key} to {target.label}: already delivered or queued")
                        continue
                    now = _now()
                    state.pending.append(
                        {
                            "id": delivery,
                            "notice": notice.to_json(),
                            "target": target.to_json(),
                            "attempts": 0,
                            "last_error": None,
                            "queued_at": now,
                            "last_attempt_at": None,
                        }
                    )
                    state.changed = True
                self._flush(state, outcome)
        except Exception as exc:  # the outbox folder is unwritable, or a bug: tell, never fail the caller
            self.log.error(f"notification {notice.key} not sent: {self._redacted(exc, targets)}")
        return outcome

    def flush(self) -> Outcome:
        """Send every pending delivery (the retry path). Never raises."""
        outcome = Outcome()
        if not self.outbox.has_pending():  # the common case, read without taking the lock or creating the folder
            return outcome
        try:
            with self.outbox.transaction() as state:
                self._flush(state, outcome)
        except Exception as exc:
            self.log.error(f"notification outbox not flushed: {type(exc).__name__}: {exc}")
        return outcome

    # -------------------------------------------------------------------------------------------------------------
    def _configured(self, target: Target) -> bool:
        s = dict(target.settings)
        variable = str(s.get("webhook_url_env") or s.get("url_env") or s.get("smtp_host_env"))
        if (self.env.get(variable) or "").strip():
            return True
        self.log.info(f"notifications: {target.label} skipped: ${variable} is not set")
        return False

    def _flush(self, state: State, outcome: Outcome) -> None:
        for where in state.bad_lines:
            self.log.error(f"notification outbox: {where} is not a delivery (dropped)")
        started, failed = time.monotonic(), set()
        horizon = (datetime.now(UTC) - MAX_AGE).isoformat()
        for entry in list(state.pending):
            target, notice = Target.from_json(entry["target"]), Notice.from_json(entry["notice"])
            if entry["id"] in state.delivered:  # delivered by another path meanwhile
                state.pending.remove(entry)
                state.changed = True
                continue
            if entry["queued_at"] < horizon:
                state.pending.remove(entry)
                state.changed = True
                outcome.given_up.append(entry["id"])
                self.log.error(
                    f"notification {notice.key} to {target.label} given up after {entry['attempts']} attempts "
                    f"since {entry['queued_at']}: {entry['last_error']}"
                )
                continue
            if target.id in failed or time.monotonic() - started > FLUSH_BUDGET_S:
                outcome.pending.append(entry["id"])
                continue
            entry["attempts"] += 1
            entry["last_attempt_at"] = _now()
            state.changed = True
            try:
                note = channels.send(target, notice, self.env, self.timeout)
            except Unconfigured as exc:
                failed.add(target.id)
                outcome.pending.append(entry["id"])
                entry["last_error"] = str(exc)
                self.log.warning(f"notification {notice.key} to {target.label} waits: {exc}")
                continue
            except DeliveryError as exc:
                failed.add(target.id)
                outcome.pending.append(entry["id"])
                entry["last_error"] = str(exc)
                self.log.warning(
                    f"notification {notice.key} to {target.label} failed (attempt {entry['attempts']}): {exc}; "
                    "kept in the outbox and retried later"
                )
                continue
            state.pending.remove(entry)
            state.delivered[entry["id"]] = _now()
            outcome.delivered.append(entry["id"])
            self.log.info(f"notification {notice.key} sent to {target.label}" + (f" ({note})" if note else ""))

    def _redacted(self, exc: Exception, targets: Sequence[Target]) -> str:
        secrets = [s for t in targets for s in t.secrets(self.env)]
        return channels.redact(f"{type(exc).__name__}: {exc}", secrets)


def _now() -> str:
    return datetime.now(UTC).isoformat()
