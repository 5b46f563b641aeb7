"""What a notification says: a `Notice` per event (a run failure, a gate decision, newly opened alerts, new
annotation tasks), with a dedupe key and links to the Dagster UI, and its payload for each channel.

Links follow the Dagster UI's routes: a run is `<base>/runs/<run_id>`, an asset's partition
`<base>/assets/<key path>?view=partitions&partition=<use case>`; the base is ONTOS_DAGSTER_URL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import quote

SEVERITIES = ("info", "warning", "error")
MAX_TEXT = 2800  # a Slack section holds 3,000 characters; errors and long lists are cut below that
TOP_TASKS = 5


@dataclass(frozen=True)
class Notice:
    """One event to tell people about. `key` is unique per event: a channel gets each key once."""

    key: str
    event: str  # run_failure | gate | alert | tasks (specs.NOTIFY_EVENTS)
    title: str
    text: str
    links: tuple[tuple[str, str], ...]  # (label, url), the first is the main one
    use_case: str | None = None
    severity: str = "info"
    facts: tuple[tuple[str, str], ...] = ()
    data: Mapping[str, object] = field(default_factory=dict)  # structured details (JSON) for the webhook
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> Notice:
        values = dict(raw)
        values["links"] = tuple(tuple(x) for x in values.get("links") or ())  # type: ignore[union-attr]
        values["facts"] = tuple(tuple(x) for x in values.get("facts") or ())  # type: ignore[union-attr]
        return cls(**values)  # type: ignore[arg-type]


def run_url(base_url: str, run_id: str) -> str:
    return f"{base_url.rstrip('/')}/runs/{quote(run_id, safe='')}"


def asset_url(base_url: str, asset_key: str, partition: str | None = None) -> str:
    path = "/".join(quote(part, safe="") for part in asset_key.split("/"))
    query = f"?view=partitions&partition={quote(partition, safe='')}" if partition else ""
    return f"{base_url.rstrip('/')}/assets/{path}{query}"


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(sorted(parts)).encode()).hexdigest()[:16]


# -- notices --------------------------------------------------------------------------------------------------------
def run_failure_notice(
    base_url: str,
    run_id: str,
    job: str,
    partition: str | None,
    failed_steps: Sequence[tuple[str, str]],
    error: str,
) -> Notice:
    """A failed run: its job, partition, failing step(s) with their error, and the run's link."""
    steps = ", ".join(step for step, _ in failed_steps) or "none (the run failed outside a step)"
    details = [f"{step}: {message}" for step, message in failed_steps] or [error]
    return Notice(
        key=f"run_failure:{run_id}",
        event="run_failure",
        title=f"Run failed: {job}" + (f" [{partition}]" if partition else ""),
        text=_cut("\n".join(details)),
        links=(("View run in Dagster", run_url(base_url, run_id)),),
        use_case=partition,
        severity="error",
        facts=(("job", job), ("partition", partition or "none"), ("failed step", steps), ("run id", run_id)),
        data={
            "run_id": run_id,
            "job": job,
            "partition": partition,
            "failed_steps": [{"step": s, "error": _cut(m, 1000)} for s, m in failed_steps],
            "error": _cut(error, 1000),
        },
    )


def kept_key(use_case: str, model_version: object) -> str:
    """The key of "the champion stays: version N failed its gate": the same whether `model_evaluation` (a full run
    stops at the blocking gate) or `serving_endpoint` (materialized on its own) tells it, so it is told once."""
    return f"gate:kept:{use_case}:{model_version}"


def gate_notice(
    base_url: str,
    run_id: str,
    key: str,
    *,
    use_case: str,
    endpoint: str,
    decision: str,
    served_version: object,
    previous_version: object,
    reason: str,
    rules: Sequence[Mapping[str, object]],
    challenger_version: object = None,
    challenger_percent: int | None = None,
) -> Notice:
    """A promotion-gate decision: deployed (`decision` deploy), kept, or A/B tested (`split`: the challenger answers
    `challenger_percent` of the requests), why, and each gate rule with its numbers."""
    if decision == "deploy":
        title = f"{use_case}: version {served_version} deployed to {endpoint}"
    elif decision == "split":
        title = (
            f"{use_case}: A/B test on {endpoint}: version {challenger_version} gets {challenger_percent}% "
            f"of requests next to version {served_version}"
        )
    else:
        kept = f"version {served_version}" if served_version else "serving nothing"
        title = f"{use_case}: {endpoint} keeps {kept}"
    lines = [reason]
    lines += [f"{'PASS' if r.get('passed') else 'FAIL'} {r.get('rule')}: {r.get('detail')}" for r in rules]
    return Notice(
        key=key,
        event="gate",
        title=title,
        text=_cut("\n".join(lines)),
        links=(
            ("View endpoint in Dagster", asset_url(base_url, "serving_endpoint", use_case)),
            ("View run", run_url(base_url, run_id)),
        ),
        use_case=use_case,
        severity="info" if decision in ("deploy", "split") else "warning",
        facts=(
            ("decision", decision),
            ("served version", str(served_version or "none")),
            ("previous version", str(previous_version or "none")),
            ("endpoint", endpoint),
            *(
                (("challenger version", str(challenger_version)), ("challenger percent", f"{challenger_percent}%"))
                if challenger_version
                else ()
            ),
        ),
        data={
            "decision": decision,
            "endpoint": endpoint,
            "served_version": None if served_version is None else str(served_version),
            "previous_version": None if previous_version is None else str(previous_version),
            "reason": reason,
            "rules": [dict(r) for r in rules],
            "run_id": run_id,
            **(
                {"challenger_version": str(challenger_version), "challenger_percent": challenger_percent}
                if challenger_version
                else {}
            ),
        },
    )


def alerts_notice(base_url: str, run_id: str, use_case: str, alerts: Sequence[Mapping[str, object]]) -> Notice:
    """The alerts one monitoring report opened (a breach that persists opens none, so it is told once)."""
    lines = [f"{a['kind']}: {a['message']} (alert {a['alert_id']})" for a in alerts]
    return Notice(
        key=f"alert:{use_case}:{_digest([str(a['alert_id']) for a in alerts])}",
        event="alert",
        title=f"{use_case}: {len(alerts)} new monitoring alert{'s' if len(alerts) != 1 else ''}",
        text=_cut("\n".join(lines) + "\nAcknowledge or resolve: uv run ontos alerts list --status open"),
        links=(
            ("View monitoring report", asset_url(base_url, "monitoring_report", use_case)),
            ("View run", run_url(base_url, run_id)),
        ),
        use_case=use_case,
        severity="error",
        facts=(("alerts opened", str(len(alerts))), ("kinds", ", ".join(sorted({str(a["kind"]) for a in alerts})))),
        data={
            "run_id": run_id,
            "alerts": [{k: a.get(k) for k in ("alert_id", "kind", "severity", "message")} for a in alerts],
        },
    )


def tasks_notice(
    base_url: str, run_id: str, use_case: str, tasks: Sequence[Mapping[str, object]], open_tasks: int
) -> Notice:
    """New annotation tasks: how many, and the most urgent few."""
    top = sorted(tasks, key=lambda t: (t["priority"], str(t["task_id"])))[:TOP_TASKS]
    lines = [
        f"{t['task_id']} (priority {t['priority']}, {len(t.get('item_refs') or [])} items): "
        + _cut(str(t.get("instructions", "")).split(" Each label is ")[0], 300)
        for t in top
    ]
    if len(tasks) > len(top):
        lines.append(f"... and {len(tasks) - len(top)} more")
    lines.append(f"Work them: uv run ontos tasks list {use_case}")
    return Notice(
        key=f"tasks:{use_case}:{_digest([str(t['task_id']) for t in tasks])}",
        event="tasks",
        title=f"{use_case}: {len(tasks)} new annotation task{'s' if len(tasks) != 1 else ''}",
        text=_cut("\n".join(lines)),
        links=(
            ("View annotation tasks", asset_url(base_url, "annotation_tasks", use_case)),
            ("View run", run_url(base_url, run_id)),
        ),
        use_case=use_case,
        facts=(("new tasks", str(len(tasks))), ("open tasks", str(open_tasks))),
        data={
            "run_id": run_id,
            "new_tasks": len(tasks),
            "open_tasks": open_tasks,
            "top_tasks": [
                {"task_id": t["task_id"], "priority": t["priority"], "items": len(t.get("item_refs") or [])}
                for t in top
            ],
        },
    )


# -- payloads -------------------------------------------------------------------------------------------------------
def _slack_escape(text: str) -> str:
    """Slack mrkdwn reserves &, < and > (links are `<url|label>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: Notice) -> dict:
    """An incoming-webhook message: `text` (the notification's fallback) plus Block Kit `blocks`."""
    icon = {"error": ":red_circle:", "warning": ":warning:"}.get(notice.severity, ":large_green_circle:")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(notice.title, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {_slack_escape(notice.text)}"}},
    ]
    if notice.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_slack_escape(k)}*\n{_slack_escape(_cut(v, 500))}"}
                    for k, v in notice.facts[:10]
                ],
            }
        )
    if notice.links:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}
                    for label, url in notice.links[:5]
                ],
            }
        )
    main = notice.links[0][1] if notice.links else ""
    link = f" <{main}|{notice.links[0][0]}>" if main else ""
    return {"text": _slack_escape(notice.title) + link, "blocks": blocks}


def webhook_payload(notice: Notice) -> dict:
    """The generic webhook's JSON body."""
    return {
        "source": "ontos",
        "key": notice.key,
        "event": notice.event,
        "use_case": notice.use_case,
        "severity": notice.severity,
        "title": notice.title,
        "text": notice.text,
        "facts": dict(notice.facts),
        "links": dict(notice.links),
        "url": notice.links[0][1] if notice.links else None,
        "data": dict(notice.data),
        "created_at": notice.created_at,
    }


def email_message(notice: Notice, sender: str, to: Sequence[str]) -> EmailMessage:
    """A plain-text e-mail."""
    message = EmailMessage()
    message["Subject"] = f"[Ontos] {notice.title}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["X-Ontos-Notice"] = notice.key
    body = [notice.text, ""]
    body += [f"{k}: {v}" for k, v in notice.facts]
    body += ["", *(f"{label}: {url}" for label, url in notice.links)]
    message.set_content("\n".join(body) + "\n")
    return message
