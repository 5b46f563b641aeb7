"""Human review of a training sheet: decisions are validated, then appended to `label_reviews` in one commit.

An edit carries a label that must validate against the response schema; it becomes a canonical label (source
`review`) at the next `canonical_labels` materialization and is reused by every training sheet of that label type.
Approving a model proposal (response source `model`) records the proposed value with the approval, so it becomes a
canonical label of source `review` the same way, and the value a person approved is the one trained on (not
whatever a later champion proposes). `approve_proposals` approves, in bulk, the pending proposals at or above a
confidence. A batch of decisions is all-or-nothing: one bad line rejects the whole batch, naming the line.
Reviewing reads and writes small row sets with delta-rs: no Spark.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from ontos_pipeline.generate.qa_pairs import REVIEWS, training_sheet_rows, training_sheet_version
from ontos_pipeline.label.label_files import normalize_label, response_validator, validate_label
from ontos_pipeline.platform.files import TextFileError, csv_records, jsonl_records, read_text_file
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

DECISIONS = ("approve", "edit", "reject", "flag")
MODEL = "model"  # the response source of a proposal (generate.training_sheet.MODEL, without importing Spark)
BANDS = 10  # confidence bands of a bulk approval summary: [0.0, 0.1), ..., [0.9, 1.0]


class ReviewError(ValueError):
    """A review decision cannot be recorded; nothing was written."""


@dataclass(frozen=True)
class Decision:
    item_ref: str
    decision: str
    label: str | None = None  # JSON text, for edit
    comment: str | None = None
    where: str = "command line"


def read_decisions(path: Path, default_decision: str | None = None) -> list[Decision]:
    """Decisions from a CSV (header with item_ref[,decision,label,comment]) or JSONL file."""
    out: list[Decision] = []
    if not path.exists():
        raise ReviewError(f"{path}: no such file")
    if path.suffix not in (".csv", ".jsonl"):
        raise ReviewError(f"{path}: use a .csv or .jsonl file")
    try:
        text = read_text_file(path)
        if path.suffix == ".csv":
            header, records = csv_records(text, path.name)
            if ITEM_KEY not in header:
                raise ReviewError(f"{path}:1: the header must name an {ITEM_KEY} column")
        else:
            records = jsonl_records(text.splitlines(), path.name, ReviewError)
    except TextFileError as exc:
        raise ReviewError(f"{exc}; nothing was recorded") from None
    for where, record in records:
        if not isinstance(record, dict) or not record.get(ITEM_KEY):
            raise ReviewError(f"{where}: each line needs an {ITEM_KEY}")
        decision = record.get("decision") or default_decision
        label = record.get("label")
        if label is not None and not isinstance(label, str):
            label = json.dumps(label)
        out.append(Decision(str(record[ITEM_KEY]), str(decision), label or None, record.get("comment"), where))
    return out


def record_decisions(
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    decisions: Sequence[Decision],
    reviewer: str,
    based_on_version: str | None = None,
) -> list[str]:
    """Validate every decision against the current training sheet, then append them all in one commit."""
    if not decisions:
        raise ReviewError("no decisions given")
    sheet_id = spec.training_sheet_id
    version = training_sheet_version(lakehouse, sheet_id)
    if version is None:
        raise ReviewError(
            f"training sheet {sheet_id} does not exist yet; materialize the training_sheet asset for {spec.name} first"
        )
    if based_on_version and based_on_version != version:
        raise ReviewError(
            f"stale decision: you reviewed version {based_on_version} of {sheet_id}, the current "
            f"version is {version}; look at the items again (`ontos review show`) and decide on "
            "the current version"
        )
    refs = sorted({d.item_ref for d in decisions})
    rows = {
        r[ITEM_KEY]: r
        for r in training_sheet_rows(lakehouse, sheet_id, items=refs, columns=["response", "status", "response_source"])
    }
    validator = response_validator(spec.template.response_schema)
    now = datetime.now(UTC)
    out = []
    kind = spec.template.response_kind
    decisions = [
        Decision(d.item_ref, d.decision, normalize_label(d.label, kind), d.comment, d.where)
        if d.label is not None
        else d
        for d in decisions
    ]
    for d in decisions:
        problem = _problem(d, rows, validator, sheet_id)
        if problem:
            raise ReviewError(f"{d.where}: item {d.item_ref!r}: {problem}; nothing was recorded")
        label = validate_label(validator, d.label)[1] if d.decision == "edit" else None
        if d.decision == "approve" and rows[d.item_ref]["response_source"] == MODEL:
            label = rows[d.item_ref]["response"]  # the proposal this person approved becomes their label
        review_id = hashlib.sha256(
            f"{sheet_id}|{d.item_ref}|{d.decision}|{label}|{reviewer}|{now.isoformat()}".encode()
        ).hexdigest()[:24]
        out.append(
            {
                "review_id": review_id,
                "training_sheet_id": sheet_id,
                ITEM_KEY: d.item_ref,
                "label_type": spec.labels.label_type,
                "decision": d.decision,
                "label_data": label,
                "comment": d.comment,
                "reviewer": reviewer,
                "based_on_version": version,
                "created_at": now,
            }
        )
    lakehouse.append_records(REVIEWS, out)
    return [r["review_id"] for r in out]


def _problem(d: Decision, rows: dict, validator, sheet_id: str) -> str | None:
    if d.decision not in DECISIONS:
        return f"unknown decision {d.decision!r}; use one of {', '.join(DECISIONS)}"
    if d.item_ref not in rows:
        return f"not in training sheet {sheet_id}"
    if d.decision == "approve" and rows[d.item_ref]["response"] is None:
        return (
            "has no proposed response to approve; use edit with the correct label, or wait until a champion is "
            "served and training_sheet is materialized again (it then proposes one)"
        )
    if d.decision == "edit":
        if d.label is None:
            return "edit needs a label (--label JSON)"
        reason, _ = validate_label(validator, d.label)
        if reason:
            return f"invalid label: {reason}"
    if d.decision != "edit" and d.label is not None:
        return f"a label only goes with edit, not {d.decision}"
    return None


@dataclass(frozen=True)
class ProposalApproval:
    """What `approve_proposals` chose (and recorded, unless it was a dry run)."""

    training_sheet_id: str
    version: str
    min_confidence: float
    items: list[str]
    by_band: dict[str, int] = field(default_factory=dict)  # "0.9-1.0" -> items
    by_value: dict[str, int] = field(default_factory=dict)  # proposed value (JSON text) -> items
    already_decided: int = 0  # pending proposals at the threshold with a decision recorded since the last build
    review_ids: list[str] = field(default_factory=list)  # empty on a dry run


def confidence_band(confidence: float) -> str:
    low = min(int(confidence * BANDS), BANDS - 1) / BANDS
    return f"{low:.1f}-{low + 1 / BANDS:.1f}"


def approve_proposals(
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    min_confidence: float,
    reviewer: str,
    *,
    dry_run: bool = False,
    comment: str | None = None,
) -> ProposalApproval:
    """Approve every pending model proposal with confidence >= `min_confidence` in one commit (none on a dry run).

    Items that already have a decision recorded since the training sheet was built are skipped, so running it
    again approves nothing twice; selection and append happen under the reviews table's lock."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ReviewError(f"--min-confidence must be between 0 and 1, got {min_confidence}; nothing was recorded")
    sheet_id = spec.training_sheet_id
    with lakehouse.locked(REVIEWS):
        version = training_sheet_version(lakehouse, sheet_id)
        if version is None:
            raise ReviewError(
                f"training sheet {sheet_id} does not exist yet; materialize the training_sheet asset for {spec.name} "
                "first"
            )
        rows = training_sheet_rows(
            lakehouse, sheet_id, status="pending", columns=["response", "response_source", "confidence"]
        )
        proposals = [
            r
            for r in rows
            if r["response_source"] == MODEL
            and r["response"] is not None
            and r["confidence"] is not None
            and r["confidence"] >= min_confidence
        ]
        decided = {r[ITEM_KEY] for r in lakehouse.records(REVIEWS, {"training_sheet_id": sheet_id}, columns=[ITEM_KEY])}
        chosen = [r for r in proposals if r[ITEM_KEY] not in decided]
        result = ProposalApproval(
            sheet_id,
            version,
            min_confidence,
            [r[ITEM_KEY] for r in chosen],
            dict(sorted(Counter(confidence_band(r["confidence"]) for r in chosen).items(), reverse=True)),
            dict(Counter(r["response"] for r in chosen).most_common()),
            len(proposals) - len(chosen),
        )
        if dry_run or not chosen:
            return result
        decisions = [Decision(r[ITEM_KEY], "approve", None, comment, f"proposal {r[ITEM_KEY]}") for r in chosen]
        ids = record_decisions(lakehouse, spec, decisions, reviewer, based_on_version=version)
    return replace(result, review_ids=ids)
