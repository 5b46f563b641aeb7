"""IMPROVE stage: feedback and reviewed labels decide when a use case retrains (the retrain sensor's logic).

The feedback table numbers its rows with a gap-free `seq` (assigned and committed under the table lock), so "every
row with seq <= N" is a well-defined set once a reader has seen N. The sensor's cursor keeps, per use case, the seq
high-water mark and the count of reviewed labels that the last requested retrain covered; a retrain is requested
when what arrived since reaches the spec's thresholds, with a run key naming the high-water marks, so a repeated
or concurrent tick cannot request the same retrain twice and a restarted sensor resumes from its stored cursor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ontos_pipeline.label.feedback import FEEDBACK
from ontos_pipeline.label.label_files import INBOX_SUFFIXES, inbox_dir
from ontos_pipeline.label.labels import REVIEWS
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import UseCaseSpec

RETRAIN_JOB = "retrain"


@dataclass(frozen=True)
class Arrivals:
    """What has arrived for one use case after a cursor position."""

    use_case: str
    last_seq: int  # highest feedback seq of this use case seen (the cursor's value when nothing arrived)
    actionable: int  # corrections and thumbs-down accepted after the cursor
    feedback: int  # every feedback row after the cursor (actionable or not)
    reviewed_total: int  # review decisions plus inbox label rows, in total (append-only, so a counter)


@dataclass(frozen=True)
class CursorEntry:
    seq: int = 0  # feedback up to this seq is covered by a requested retrain
    reviewed: int = 0  # reviewed labels up to this count are covered by a requested retrain
    observed: int = 0  # the feedback high-water mark last reported as the `feedback` asset's data version

    def to_json(self) -> dict:
        return {"seq": self.seq, "reviewed": self.reviewed, "observed": self.observed}


@dataclass(frozen=True)
class RetrainDecision:
    use_case: str
    run_key: str | None  # None: no retrain (see reason)
    reason: str
    cursor: CursorEntry  # the cursor after this decision
    tags: Mapping[str, str]
    seen: Arrivals
    observe: bool  # the feedback high-water mark moved since it was last reported

    @property
    def data_version(self) -> str:
        return feedback_data_version(self.seen.last_seq)


def feedback_data_version(seq: int) -> str:
    return f"seq-{seq}"


def parse_cursor(text: str | None) -> dict[str, CursorEntry]:
    if not text:
        return {}
    raw = json.loads(text)
    return {
        k: CursorEntry(int(v.get("seq", 0)), int(v.get("reviewed", 0)), int(v.get("observed", 0)))
        for k, v in raw.items()
        if not k.startswith("@")  # "@breaches": the alerts acted on (improve.breaches)
    }


def dump_cursor(cursor: Mapping[str, CursorEntry], breaches_acted: list[str] | None = None) -> str:
    out: dict = {k: v.to_json() for k, v in sorted(cursor.items())}
    if breaches_acted:
        out["@breaches"] = sorted(breaches_acted)
    return json.dumps(out, sort_keys=True)


def is_actionable(row: Mapping[str, object]) -> bool:
    """A correction or a thumbs-down that was accepted (not rejected at intake)."""
    return row.get("status") != "rejected" and (row.get("correction") is not None or row.get("rating") == "down")


def arrivals(lakehouse: Lakehouse, spec: UseCaseSpec, after: CursorEntry) -> Arrivals:
    """Feedback after `after.seq` and the reviewed-label counter, read from one snapshot of each table."""
    rows = [
        r
        for r in lakehouse.records(FEEDBACK, {"use_case": spec.name}, columns=["seq", "rating", "correction", "status"])
        if r["seq"] > after.seq
    ]
    last = max((r["seq"] for r in rows), default=after.seq)
    return Arrivals(spec.name, last, sum(is_actionable(r) for r in rows), len(rows), reviewed_labels(lakehouse, spec))


def reviewed_labels(lakehouse: Lakehouse, spec: UseCaseSpec) -> int:
    """Review decisions on the use case's training sheet plus label rows in its inbox (both only ever grow)."""
    reviews = len(lakehouse.records(REVIEWS, {"training_sheet_id": spec.training_sheet_id}, columns=["review_id"]))
    return reviews + sum(
        _label_rows(p) for p in sorted(Path(inbox_dir(lakehouse, spec.name)).iterdir()) if p.suffix in INBOX_SUFFIXES
    )


def _label_rows(path: Path) -> int:
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(lines - 1, 0) if path.suffix == ".csv" else lines


def decide(spec: UseCaseSpec, cursor: CursorEntry, seen: Arrivals) -> RetrainDecision:
    """Request a retrain when enough arrived since `cursor`; otherwise keep the cursor and say why.

    Below the thresholds the cursor does not move, so arrivals accumulate across ticks: each feedback row is
    counted by exactly one retrain request (the one whose seq range holds it), however ticks split the arrivals.
    """
    observe = seen.last_seq != cursor.observed
    reviewed_new = seen.reviewed_total - cursor.reviewed
    if reviewed_new < 0:  # inbox files were removed: count from the new total
        cursor, reviewed_new = CursorEntry(cursor.seq, seen.reviewed_total, cursor.observed), 0
    need = spec.retrain
    if seen.actionable < need.min_actionable_feedback and reviewed_new < need.min_reviewed_labels:
        reason = (
            f"{spec.name}: {seen.actionable}/{need.min_actionable_feedback} actionable feedback since seq "
            f"{cursor.seq} and {reviewed_new}/{need.min_reviewed_labels} new reviewed labels"
        )
        kept = CursorEntry(cursor.seq, cursor.reviewed, seen.last_seq)
        return RetrainDecision(spec.name, None, reason, kept, {}, seen, observe)
    after = CursorEntry(seen.last_seq, seen.reviewed_total, seen.last_seq)
    tags = {
        "ontos/trigger": "feedback",
        "ontos/feedback_seq_from": str(cursor.seq + 1),
        "ontos/feedback_seq_to": str(seen.last_seq),
        "ontos/actionable_feedback": str(seen.actionable),
        "ontos/new_feedback": str(seen.feedback),
        "ontos/new_reviewed_labels": str(reviewed_new),
    }
    reason = (
        f"{spec.name}: {seen.actionable} actionable feedback (seq {cursor.seq + 1}..{seen.last_seq}) and "
        f"{reviewed_new} new reviewed labels"
    )
    return RetrainDecision(
        spec.name,
        f"{RETRAIN_JOB}:{spec.name}:seq{seen.last_seq}:reviewed{seen.reviewed_total}",
        reason,
        after,
        tags,
        seen,
        observe,
    )


def evaluate_retrains(
    lakehouse: Lakehouse, specs: Mapping[str, UseCaseSpec], cursor: Mapping[str, CursorEntry]
) -> tuple[list[RetrainDecision], dict[str, CursorEntry]]:
    """One tick: a decision per use case and the cursor to store after it."""
    decisions = [
        decide(spec, cursor.get(name, CursorEntry()), arrivals(lakehouse, spec, cursor.get(name, CursorEntry())))
        for name, spec in specs.items()
    ]
    return decisions, {**cursor, **{d.use_case: d.cursor for d in decisions}}
