"""Feedback on served answers: validated, numbered and appended to the `feedback` table.

`seq` is a gap-free, strictly increasing number per table: it is assigned and committed under the table lock, so a
reader that has seen seq N has seen every row up to N (the high-water mark the retrain sensor uses as cursor).
A correction that does not validate against the response schema is kept with status `rejected` and the reason:
feedback is never dropped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ontos_pipeline.lakehouse import Lakehouse
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.stages.labels import response_validator, validate_label

FEEDBACK = "feedback"
RATINGS = ("up", "down")
FIELDS = {"endpoint", "use_case", "request_id", "item_ref", "rating", "correction", "comment", "author"}


class FeedbackError(ValueError):
    """Feedback that cannot be accepted at all (it names the field and what is expected)."""


@dataclass(frozen=True)
class Feedback:
    use_case: str
    request_id: str | None
    item_ref: str | None
    rating: str | None
    correction: object | None
    comment: str | None
    author: str | None


def parse_feedback(body: object, use_case: str) -> Feedback:
    """Structural checks of one feedback body; the correction's content is checked by `record_feedback`."""
    if not isinstance(body, Mapping):
        raise FeedbackError("feedback must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise FeedbackError(f"unknown field {unknown[0]!r}; expected some of {', '.join(sorted(FIELDS))}")
    for key in ("request_id", "item_ref", "comment", "author", "rating"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise FeedbackError(f"field {key!r} must be a string")
    if not body.get("request_id") and not body.get("item_ref"):
        raise FeedbackError("give the request_id of the answer (the X-Request-Id response header) or an item_ref")
    rating = body.get("rating")
    if rating is not None and rating not in RATINGS:
        raise FeedbackError(f"field 'rating' must be 'up' or 'down', got {rating!r}")
    if rating is None and body.get("correction") is None:
        raise FeedbackError("give a rating ('up' or 'down') or a correction")
    return Feedback(use_case, body.get("request_id") or None, body.get("item_ref") or None, rating,
                    body.get("correction"), body.get("comment"), body.get("author"))


def record_feedback(lakehouse: Lakehouse, spec: UseCaseSpec, items: Sequence[Feedback],
                    problems: Sequence[str | None] | None = None) -> list[dict]:
    """Append feedback rows in one commit; each row says whether it was accepted (`new`) or `rejected` and why.

    `problems` (one per item, optional) are reasons found by the caller, e.g. an unknown request id.
    """
    validator = response_validator(spec.template.response_schema)
    now = datetime.now(UTC)
    rows = []
    for f, problem in zip(items, problems or [None] * len(items), strict=True):
        correction = None if f.correction is None else json.dumps(f.correction, sort_keys=True, ensure_ascii=False)
        reason = problem or (None if correction is None else validate_label(validator, correction)[0])
        rows.append({"feedback_id": uuid.uuid4().hex, "use_case": spec.name, "request_id": f.request_id,
                     "item_ref": f.item_ref, "rating": f.rating, "correction": correction, "comment": f.comment,
                     "author": f.author, "status": "rejected" if reason else "new",
                     "reason": reason if problem or not reason else f"correction {reason}", "created_at": now})
    with lakehouse.locked(FEEDBACK):
        last = lakehouse.max_value(FEEDBACK, "seq") or 0
        for i, row in enumerate(rows, start=1):
            row["seq"] = last + i
        lakehouse.append_records(FEEDBACK, rows)
    return rows
