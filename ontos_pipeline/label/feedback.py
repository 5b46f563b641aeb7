"""Feedback on served answers: validated, numbered and appended to the `feedback` table.

`seq` is a gap-free, strictly increasing number per table: it is assigned and committed under the table lock, so a
reader that has seen seq N has seen every row up to N (the high-water mark the retrain sensor uses as cursor).
A correction that does not validate against the response schema is kept with status `rejected` and the reason:
feedback is never dropped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ontos_pipeline.label.label_files import response_validator, validate_label
from ontos_pipeline.label.labels import CANDIDATE_SCHEMA
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.tables import INFERENCE_LOG
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

FEEDBACK = tables.FEEDBACK
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
    return Feedback(
        use_case,
        body.get("request_id") or None,
        body.get("item_ref") or None,
        rating,
        body.get("correction"),
        body.get("comment"),
        body.get("author"),
    )


def logged_requests(lakehouse: Lakehouse, request_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """Request id -> (endpoint, item_ref of its single record or None) for those of `request_ids` in the inference
    log, in one read of the table (unknown ids are absent)."""
    wanted = sorted(set(request_ids))
    if not wanted:
        return {}
    found = {}
    for row in lakehouse.records(
        INFERENCE_LOG, {"request_id": wanted}, columns=["request_id", "endpoint_name", "inputs"]
    ):
        try:
            records = json.loads(row["inputs"] or "[]")
            refs = {r.get(ITEM_KEY) for r in records if isinstance(r, dict)} if isinstance(records, list) else set()
        except (json.JSONDecodeError, TypeError):
            refs = set()
        found.setdefault(row["request_id"], (row["endpoint_name"], refs.pop() if len(refs) == 1 else None))
    return found


def record_feedback(
    lakehouse: Lakehouse,
    spec: UseCaseSpec,
    items: Sequence[Feedback],
    problems: Sequence[str | None] | None = None,
    caller: str | None = None,
) -> list[dict]:
    """Append feedback rows in one commit; each row says whether it was accepted (`new`) or `rejected` and why.

    `problems` (one per item, optional) are reasons found by the caller, e.g. an unknown request id; `caller` is who
    sent them (the serving token's name, or the login name of `ontos feedback`).
    """
    validator = response_validator(spec.template.response_schema)
    now = datetime.now(UTC)
    rows = []
    for f, problem in zip(items, problems or [None] * len(items), strict=True):
        correction = None if f.correction is None else json.dumps(f.correction, sort_keys=True, ensure_ascii=False)
        reason = problem or (None if correction is None else validate_label(validator, correction)[0])
        rows.append(
            {
                "feedback_id": uuid.uuid4().hex,
                "use_case": spec.name,
                "request_id": f.request_id,
                "item_ref": f.item_ref,
                "rating": f.rating,
                "correction": correction,
                "comment": f.comment,
                "author": f.author,
                "caller": caller,
                "status": "rejected" if reason else "new",
                "reason": reason if problem or not reason else f"correction {reason}",
                "created_at": now,
            }
        )
    with lakehouse.locked(FEEDBACK):
        last = lakehouse.max_value(FEEDBACK, "seq") or 0
        for i, row in enumerate(rows, start=1):
            row["seq"] = last + i
        lakehouse.append_records(FEEDBACK, rows)
    return rows


@dataclass(frozen=True)
class FeedbackSource:
    """Accepted feedback as label candidates (source `feedback`, one candidate per feedback row).

    A correction is a candidate with the spec's `retrain.correction_confidence`; a thumbs-up confirms the served
    answer (read from the inference log by request id) with `retrain.confirm_confidence` when
    `retrain.confirm_thumbs_up` is on (off by default for sheets with PHI). Candidates are validated like any
    label by the merge: a correction for an item the sheet does not hold lands in `label_rejects` with the reason,
    and the feedback row itself stays in the feedback table.
    """

    name: str = "feedback"

    def read(self, spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec) -> DataFrame | None:
        if not lakehouse.exists(FEEDBACK):
            return None
        accepted = lakehouse.read(spark, FEEDBACK).filter(
            (F.col("use_case") == spec.name) & (F.col("status") != "rejected")
        )
        frames = [
            accepted.filter(F.col("correction").isNotNull()).select(
                "*", F.col("correction").alias("label_data"), F.lit(spec.retrain.correction_confidence).alias("conf")
            )
        ]
        if spec.retrain.confirm_thumbs_up and lakehouse.exists(INFERENCE_LOG):
            served = (
                lakehouse.read(spark, INFERENCE_LOG)
                .filter(F.col("status_code") == 200)
                .select(
                    "request_id",
                    F.udf(lambda r: _single_answer(r), T.StringType())(F.col("response")).alias("label_data"),
                )
            )
            ups = accepted.filter(
                (F.col("rating") == "up") & F.col("correction").isNull() & F.col("request_id").isNotNull()
            )
            frames.append(
                ups.join(served, "request_id", "left").select(
                    *accepted.columns, "label_data", F.lit(spec.retrain.confirm_confidence).alias("conf")
                )
            )
        rows = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
        error = F.when(
            F.col(ITEM_KEY).isNull(),
            F.concat(
                F.lit("feedback "),
                F.col("feedback_id"),
                F.lit(": no item_ref (the request held several records); send the feedback with the item_ref"),
            ),
        ).when(
            F.col("label_data").isNull(),
            F.concat(
                F.lit("feedback "),
                F.col("feedback_id"),
                F.lit(": thumbs-up for a request whose answer is not in the inference log (or held several)"),
            ),
        )
        return rows.select(
            F.col(ITEM_KEY),
            F.col("label_data"),
            F.col("conf").cast("double").alias("confidence"),
            F.lit("feedback").alias("source"),
            F.concat(F.lit("feedback:"), F.col("feedback_id")).alias("source_ref"),
            _labeled_by(rows).alias("labeled_by"),
            F.lit(None).cast("array<string>").alias("allowed_uses"),
            F.lit(None).cast("array<string>").alias("prohibited_uses"),
            F.col("created_at"),
            error.alias("error"),
        ).select(*CANDIDATE_SCHEMA.fieldNames())


def _labeled_by(rows: DataFrame) -> Column:
    """Who a feedback label is from: the authenticated caller, with the author it names when that is someone else
    ("alice (via support-app)"); a token cannot pass its feedback off as someone else's."""
    author = F.col("author")
    if "caller" not in rows.columns:  # a feedback table from before callers were recorded
        return F.coalesce(author, F.lit("feedback"))
    caller = F.col("caller")
    return (
        F.when(caller.isNull(), F.coalesce(author, F.lit("feedback")))
        .when(author.isNull() | (author == caller), caller)
        .otherwise(F.concat(author, F.lit(" (via "), caller, F.lit(")")))
    )


def _single_answer(response: str | None) -> str | None:
    """JSON text of the one answer of a single-record response (`[{"response": ..., ...}]`), else None."""
    if response is None:
        return None
    try:
        answers = json.loads(response)
    except json.JSONDecodeError:
        return None
    if not isinstance(answers, list) or len(answers) != 1 or not isinstance(answers[0], dict):
        return None
    return json.dumps(answers[0].get("response"), sort_keys=True, ensure_ascii=False)
