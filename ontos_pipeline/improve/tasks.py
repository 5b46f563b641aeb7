"""IMPROVE stage, part 2: annotation tasks from gaps, with their lifecycle pending -> in_progress -> completed.

One task per actionable gap. Its items are chosen by uncertainty (active learning): among the unlabelled or
disputed sheet items in the gap's region, the lowest model confidence first (a stable hash order when there is no
model). A gap with an open task (pending or in_progress) gets no second one; task ids are deterministic in the gap
and how many tasks it had before, so re-running plans the same tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ontos_pipeline.label.annotation_tasks import OPEN, TASK_ITEMS, TASKS, task_id
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

TRANSITIONS = {"in_progress": ("pending",), "completed": ("in_progress",)}


class TaskError(ValueError):
    """An unknown task or a transition that is not allowed (the message names the task and its state)."""


@dataclass(frozen=True)
class Plan:
    """What `plan_tasks` decided: the new task rows, and why the other gaps got none."""

    tasks: list[dict]
    skipped: dict[str, str]  # gap_id -> reason


def choose_items(scored: pd.DataFrame, region: dict | None, exclude: set[str], limit: int = TASK_ITEMS) -> list[str]:
    """Item refs in `region`, lowest confidence first (disputed items first on ties, then the candidates' order)."""
    from ontos_pipeline.improve.gaps import CONFIDENCE, DISPUTED, in_region  # planning only: the CLI lists tasks

    if scored.empty:
        return []
    frame = scored[in_region(scored, region) & ~scored[ITEM_KEY].isin(exclude)]
    if region and "item_refs" in region and CONFIDENCE in frame and frame[CONFIDENCE].isna().all():
        order = {ref: i for i, ref in enumerate(region["item_refs"])}  # no model: keep the gap's order
        return sorted(frame[ITEM_KEY], key=order.__getitem__)[:limit]
    settled = ~frame[DISPUTED].astype(bool) if DISPUTED in frame else False
    ordered = frame.assign(_settled=settled, _pos=range(len(frame))).sort_values(
        [CONFIDENCE, "_settled", "_pos"], na_position="last", kind="stable"
    )
    return ordered[ITEM_KEY].head(limit).tolist()


def _answer_format(spec: UseCaseSpec) -> str:
    schema, kind = spec.template.response_schema, spec.template.response_kind
    if kind == "enum":
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if kind == "number":
        return "a number" + (
            f" between {schema['minimum']} and {schema['maximum']}"
            if "minimum" in schema and "maximum" in schema
            else ""
        )
    if kind == "object":
        return "a JSON object with " + ", ".join(schema.get("properties", {}))
    return "free text"


def instructions(spec: UseCaseSpec, gap: dict, items: int) -> str:
    """What to do, why (the gap and its numbers) and how to submit the labels."""
    return (
        f"Label these {items} item(s) of {spec.name} ({spec.labels.label_type}); they are listed most uncertain "
        f"first. Why: {gap['description']}. Suggested: {gap['suggested_action']}. Each label is "
        f"{_answer_format(spec)}. Submit a CSV with header item_ref,label (or JSONL "
        f'{{"item_ref": ..., "label": ...}}) with `ontos labels import FILE --use-case {spec.name}`, or '
        f"edit items with `ontos review edit {spec.name} ITEM_REF --label JSON`; the labels reach the model "
        "through canonical_labels and the next retrain."
    )


def plan_tasks(
    spec: UseCaseSpec,
    gaps: Sequence[dict],
    scored: pd.DataFrame,
    existing: Sequence[dict],
    now: datetime | None = None,
    limit: int = TASK_ITEMS,
) -> Plan:
    """New tasks for `gaps` (stored gap rows, evidence parsed) given the `existing` tasks of the use case."""
    from ontos_pipeline.improve.gaps import CONFIDENCE, PRIORITY

    now = now or datetime.now(UTC)
    open_gaps = {t["gap_id"] for t in existing if t["status"] in OPEN}
    busy = {ref for t in existing if t["status"] in OPEN for ref in (t["item_refs"] or [])}
    count = {}
    for t in existing:
        count[t["gap_id"]] = count.get(t["gap_id"], 0) + 1
    tasks, skipped = [], {}
    for gap in gaps:
        if gap["gap_id"] in open_gaps:
            skipped[gap["gap_id"]] = "an open task exists"
            continue
        items = choose_items(scored, gap["evidence"].get("region"), busy, limit)
        if not items:
            unscored = scored.empty or scored[CONFIDENCE].isna().all()
            skipped[gap["gap_id"]] = "no unlabelled or disputed item in its region" + (
                " (no model scored the items)" if unscored else ""
            )
            continue
        busy.update(items)
        tasks.append(
            {
                "task_id": task_id(gap["gap_id"], count.get(gap["gap_id"], 0) + 1),
                "gap_id": gap["gap_id"],
                "use_case": spec.name,
                "instructions": instructions(spec, gap, len(items)),
                "item_refs": items,
                "priority": PRIORITY.get(gap["severity"], 3),
                "status": "pending",
                "created_at": now,
            }
        )
    return Plan(tasks, skipped)


def record_tasks(
    lakehouse: Lakehouse, spec: UseCaseSpec, gaps: Sequence[dict], scored: pd.DataFrame, limit: int = TASK_ITEMS
) -> Plan:
    """Plan against the stored tasks and append the new ones, under the table lock (no duplicate open task)."""
    with lakehouse.locked(TASKS):
        plan = plan_tasks(spec, gaps, scored, lakehouse.records(TASKS, {"use_case": spec.name}), limit=limit)
        if plan.tasks:
            lakehouse.append_records(TASKS, plan.tasks)
    return plan


def list_tasks(lakehouse: Lakehouse, use_case: str | None = None, status: str | None = None) -> list[dict]:
    """Tasks, most urgent first (priority, then oldest)."""
    where = {k: v for k, v in (("use_case", use_case), ("status", status)) if v}
    return sorted(lakehouse.records(TASKS, where), key=lambda t: (t["priority"], t["created_at"], t["task_id"]))


def get_task(lakehouse: Lakehouse, task: str) -> dict:
    """One task by id or unique id prefix."""
    found = [t for t in lakehouse.records(TASKS) if t["task_id"].startswith(task)] if task else []
    if len(found) != 1:
        raise TaskError(
            f"no task {task!r}; `ontos tasks list` shows the tasks"
            if not found
            else f"{task!r} matches {len(found)} tasks; give more of the id"
        )
    return found[0]


def transition(lakehouse: Lakehouse, task: str, to: str, assignee: str | None = None) -> dict:
    """Start (pending -> in_progress) or complete (in_progress -> completed) one task."""
    if to not in TRANSITIONS:
        raise TaskError(f"unknown task state {to!r}; use in_progress or completed")
    with lakehouse.locked(TASKS):
        current = get_task(lakehouse, task)
        if current["status"] not in TRANSITIONS[to]:
            raise TaskError(
                f"task {current['task_id']} is {current['status']}; only "
                f"{' or '.join(TRANSITIONS[to])} tasks can become {to}"
            )
        values: dict[str, object] = {
            "status": to,
            f"{'started' if to == 'in_progress' else 'completed'}_at": datetime.now(UTC),
        }
        if assignee:
            values["assignee"] = assignee
        lakehouse.update_records(TASKS, {"task_id": current["task_id"]}, values)
    return {**current, **values}


def label_progress(lakehouse: Lakehouse, spec: UseCaseSpec, task: dict) -> dict:
    """How many of the task's items have a canonical label now, and how many got one since the task was created."""
    wanted = set(task["item_refs"] or [])
    rows = lakehouse.records(
        tables.CANONICAL_LABELS,
        {"sheet_id": spec.name, "label_type": spec.labels.label_type},
        columns=[ITEM_KEY, "created_at"],
    )
    labelled = {r[ITEM_KEY] for r in rows if r[ITEM_KEY] in wanted}
    since = {r[ITEM_KEY] for r in rows if r[ITEM_KEY] in wanted and r["created_at"] >= task["created_at"]}
    return {
        "items": len(wanted),
        "labelled": len(labelled),
        "labelled_since_created": len(since),
        "missing": sorted(wanted - labelled),
    }
