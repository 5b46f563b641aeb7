"""Guardrails of an endpoint (`serving.guardrails` of the use case): they act on what the model sees and on what the
caller gets; `redaction` decides what the inference log keeps.

- `pii`: the PHI patterns of the sheet scan (`platform.phi`: e-mail, phone, SSN, date of birth) in the request's
  string cells (`inputs`) and in the answers (`outputs`): `redact` masks them (`[EMAIL]`, ...; the model sees the
  masked text), `refuse` answers 400 `GUARDRAIL_REFUSED` naming the rule and the column or field, never the value.
- `enforce_response_schema`: an answer that does not validate against the template's response schema is not
  returned (400 naming the field and the failed keyword).
- `confidence_floor`: an answer below it becomes `{"abstain": true, "response": null, ...}` and its item is queued
  for human review: an annotation task (`ReviewQueue`).
- `rate_limit`: a token bucket per endpoint and caller (the token's name): `burst` at once, refilled at
  `requests_per_minute`; over it: 429 `REQUEST_LIMIT_EXCEEDED` with `Retry-After`.

Every decision is a small JSON object (rule, stage, action, column or field, counts; never the matched text) that
the route logs in the `guardrails` column of `inference_log`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ontos_pipeline.label.annotation_tasks import OPEN, TASK_ITEMS, TASKS, task_id
from ontos_pipeline.platform.invocations import BadRequest
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.phi import scan
from ontos_pipeline.platform.spool import Spool
from ontos_pipeline.specs import ITEM_KEY, RateLimitSpec, UseCaseSpec

GUARDRAIL_REFUSED = "GUARDRAIL_REFUSED"
RATE_LIMITED = "REQUEST_LIMIT_EXCEEDED"  # Databricks' code for a 429
REVIEW_REASON = "low confidence"
REVIEW_PRIORITY = 2
log = logging.getLogger(__name__)


class GuardrailRefused(BadRequest):
    """A guardrail refused the request or its answer (400); `detail` names the rule and where, never the value."""

    def __init__(self, message: str, **detail: object):
        super().__init__(400, message, GUARDRAIL_REFUSED)
        self.detail = detail


class RateLimited(BadRequest):
    def __init__(self, message: str, retry_after: float):
        super().__init__(429, message, RATE_LIMITED)
        self.retry_after = retry_after

    @property
    def header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class EndpointGuardrails:
    """One endpoint's guardrails (`of(spec)`); `decisions` lists collect what each call decided."""

    def __init__(self, spec: UseCaseSpec):
        self.spec, self.use_case = spec.serving.guardrails, spec.name
        self.endpoint = spec.serving.endpoint_name
        self.images = {c.name for c in spec.sheet.columns_of("image")}  # paths or base64: not text to scan
        self._validator = None
        if self.spec.enforce_response_schema:
            from ontos_pipeline.label.label_files import response_validator

            self._validator = response_validator(spec.template.response_schema)

    @property
    def active(self) -> bool:
        return self.spec.active

    # -- what the model sees -------------------------------------------------------------------------------------
    def inputs(self, records: Sequence[object], decisions: list[dict]) -> list[object]:
        """The records as the model sees them: PII masked (`redact`), or GuardrailRefused (`refuse`)."""
        action = self.spec.pii.inputs
        if action == "off":
            return list(records)
        found: dict[str, tuple[int, Counter]] = {}  # column -> (records, counts by kind)
        out = []
        for record in records:
            if not isinstance(record, Mapping):
                out.append(record)
                continue
            masked = dict(record)
            for column, value in record.items():
                if isinstance(value, str) and column not in self.images:
                    text, counts = scan(value)
                    if counts:
                        masked[column] = text
                        n, total = found.get(column, (0, Counter()))
                        found[column] = (n + 1, total + Counter(counts))
            out.append(masked)
        if not found:
            return out
        for column, (n, counts) in found.items():
            decisions.append(
                {"rule": "pii", "stage": "inputs", "action": action, "column": column, "records": n, **_kinds(counts)}
            )
        if action == "refuse":
            column, (_, counts) = next(iter(found.items()))
            raise GuardrailRefused(
                f"guardrail pii (inputs): column {column!r} holds {_names(counts)}; this endpoint refuses requests "
                "with personal data (send it redacted)",
                rule="pii",
                stage="inputs",
                columns=sorted(found),
                kinds=sorted(set().union(*(c for _, c in found.values()))),
            )
        return out

    # -- what the caller gets ------------------------------------------------------------------------------------
    def outputs(
        self, answers: Sequence[dict], records: Sequence[object], request_id: str, decisions: list[dict]
    ) -> tuple[list[dict], list[dict]]:
        """(answers as returned, review items): low-confidence answers become abstains (their items to review),
        PII in the others is masked or refused, and an invalid answer is refused."""
        out, review = [], []
        floor = self.spec.confidence_floor
        for i, answer in enumerate(answers):
            confidence = answer.get("confidence") if isinstance(answer, Mapping) else None
            if floor is not None and isinstance(confidence, int | float) and confidence < floor:
                record = records[i] if i < len(records) else None
                ref = record.get(ITEM_KEY) if isinstance(record, Mapping) else None
                review.append(
                    {
                        "use_case": self.use_case,
                        "endpoint": self.endpoint,
                        "item_ref": ref if isinstance(ref, str) and ref else f"{request_id}#{i}",
                        "request_id": request_id,
                        "confidence": float(confidence),
                        "floor": floor,
                    }
                )
                out.append(
                    {
                        "abstain": True,
                        "response": None,
                        "confidence": confidence,
                        "reason": REVIEW_REASON,
                        "review": "queued",
                    }
                )
            else:
                out.append(answer)
        if review:
            decisions.append({"rule": "confidence_floor", "action": "abstain", "records": len(review), "floor": floor})
        out = self._output_pii(out, decisions)
        self._check_schema(out, decisions)
        return out, review

    def _output_pii(self, answers: list[dict], decisions: list[dict]) -> list[dict]:
        action = self.spec.pii.outputs
        if action == "off":
            return answers
        found: dict[str, tuple[int, Counter]] = {}
        out = []
        for i, answer in enumerate(answers):
            if not isinstance(answer, Mapping) or answer.get("abstain"):
                out.append(answer)
                continue
            hits: dict[str, Counter] = {}
            masked = _mask_value(answer.get("response"), "response", hits)
            for where, counts in hits.items():
                n, total = found.get(where, (0, Counter()))
                found[where] = (n + 1, total + counts)
            out.append({**answer, "response": masked} if hits else answer)
            if hits and action == "refuse":
                decisions += _pii_decisions(found, action)
                where = next(iter(hits))
                raise GuardrailRefused(
                    f"guardrail pii (outputs): the answer to record {i} holds {_names(hits[where])} in {where}; "
                    "it is not returned",
                    rule="pii",
                    stage="outputs",
                    record=i,
                    fields=sorted(hits),
                )
        decisions += _pii_decisions(found, action)
        return out

    def _check_schema(self, answers: list[dict], decisions: list[dict]) -> None:
        if self._validator is None:
            return
        import jsonschema

        for i, answer in enumerate(answers):
            if not isinstance(answer, Mapping) or answer.get("abstain"):
                continue
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(answer.get("response")))
            if error is None:
                continue
            where = _field("response", [p for p in error.absolute_path if not isinstance(p, int)])
            decisions.append(
                {"rule": "response_schema", "action": "refuse", "field": where, "check": error.validator, "records": 1}
            )
            raise GuardrailRefused(  # the keyword, never the value (it may be personal data)
                f"guardrail enforce_response_schema: the answer to record {i} does not validate against the "
                f"response schema ({error.validator} failed at {where}); it is not returned",
                rule="response_schema",
                record=i,
                field=where,
                check=error.validator,
            )


def _mask_value(value: object, where: str, hits: dict[str, Counter]) -> object:
    if isinstance(value, str):
        text, counts = scan(value)
        if counts:
            hits[where] = hits.get(where, Counter()) + Counter(counts)
        return text
    if isinstance(value, Mapping):
        return {k: _mask_value(v, f"{where}.{k}", hits) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(v, where, hits) for v in value]
    return value


def _pii_decisions(found: Mapping[str, tuple[int, Counter]], action: str) -> list[dict]:
    return [
        {"rule": "pii", "stage": "outputs", "action": action, "field": where, "records": n, **_kinds(counts)}
        for where, (n, counts) in found.items()
    ]


def _field(root: str, path: Sequence[object]) -> str:
    return ".".join([root, *(str(p) for p in path)])


def _kinds(counts: Mapping[str, int]) -> dict:
    return {"counts": dict(sorted(counts.items()))}


def _names(counts: Mapping[str, int]) -> str:
    words = {
        "email": "an e-mail address",
        "phone": "a phone number",
        "ssn": "an SSN",
        "date_of_birth": "a date of birth",
    }
    return " and ".join(words.get(k, k) for k in sorted(counts))


# ----------------------------------------------------------------------------------------------------------------
class RateLimiter:
    """Token buckets per (endpoint, caller); thread-safe and cheap enough for the event loop."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.limited: Counter = Counter()  # endpoint -> requests refused

    def take(self, endpoint: str, caller: str, limit: RateLimitSpec) -> float | None:
        """None when the request may go on, else the seconds until the caller's next token."""
        rate = limit.requests_per_minute / 60.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get((endpoint, caller), (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[(endpoint, caller)] = (tokens - 1, now)
                return None
            self._buckets[(endpoint, caller)] = (tokens, now)
            self.limited[endpoint] += 1
            return (1 - tokens) / rate


# ----------------------------------------------------------------------------------------------------------------
def review_gap(use_case: str) -> str:
    return f"low_confidence:{use_case}"


def queue_for_review(lakehouse: Lakehouse, items: Sequence[Mapping], now: datetime | None = None) -> list[dict]:
    """Annotation tasks for abstained items, in one commit under the table lock: an item already in an open task
    (of any gap) is not queued again, so committing the same items twice (a recovered spool) queues them once.
    Returns the new task rows."""
    now = now or datetime.now(UTC)
    by_case: dict[str, dict[str, Mapping]] = {}
    for item in sorted(items, key=lambda i: i["confidence"]):  # most uncertain first
        by_case.setdefault(item["use_case"], {}).setdefault(item["item_ref"], item)
    rows = []
    with lakehouse.locked(TASKS):
        for use_case, wanted in by_case.items():
            existing = lakehouse.records(TASKS, {"use_case": use_case})
            busy = {ref for t in existing if t["status"] in OPEN for ref in (t["item_refs"] or [])}
            fresh = [i for ref, i in wanted.items() if ref not in busy]
            gap = review_gap(use_case)
            count = sum(t["gap_id"] == gap for t in existing)
            for start in range(0, len(fresh), TASK_ITEMS):
                chunk = fresh[start : start + TASK_ITEMS]
                count += 1
                rows.append(
                    {
                        "task_id": task_id(gap, count),
                        "gap_id": gap,
                        "use_case": use_case,
                        "instructions": _review_instructions(use_case, chunk),
                        "item_refs": [i["item_ref"] for i in chunk],
                        "priority": REVIEW_PRIORITY,
                        "status": "pending",
                        "created_at": now,
                    }
                )
        if rows:
            lakehouse.append_records(TASKS, rows)
    return rows


def _review_instructions(use_case: str, items: Sequence[Mapping]) -> str:
    endpoint, floor = items[0]["endpoint"], items[0]["floor"]
    requests = sorted({i["request_id"] for i in items})
    shown = ", ".join(requests[:5]) + (f" and {len(requests) - 5} more" if len(requests) > 5 else "")
    return (
        f"Review these {len(items)} item(s) of {use_case} ({REVIEW_REASON}): endpoint {endpoint} abstained on them, "
        f"the model's confidence being below serving.guardrails.confidence_floor ({floor:g}); most uncertain first. "
        f"Their requests are in inference_log (request ids {shown}). Label them with `ontos labels import FILE "
        f"--use-case {use_case}` (CSV item_ref,label) or `ontos review edit {use_case} ITEM_REF --label JSON`; the "
        "labels reach the model through canonical_labels and the next retrain."
    )


class ReviewQueue:
    """Abstained items on their way to annotation tasks: spooled by the request (one `write()`, like the inference
    log) and committed in batches (`queue_for_review`) by the spool's flusher; spools left by a killed process are
    committed by the next one (an item already in an open task is not queued again)."""

    def __init__(self, lakehouse: Lakehouse, spool_root: Path | str, flush_seconds: float = 1.0):
        self.lakehouse = lakehouse
        self._spool = Spool(spool_root, self._commit, "review queue", flush_seconds)
        self.items = 0  # items committed (each queued at most once)
        self.tasks = 0  # annotation tasks made (recovered spools included)

    @property
    def pending(self) -> int:
        return self._spool.pending

    def open(self) -> None:
        self._spool.open()

    def close(self) -> None:
        self._spool.close()

    def put(self, items: Sequence[Mapping]) -> None:
        self._spool.write(items)

    def flush(self) -> int:
        """Commit what was written; returns the tasks made."""
        return self._spool.flush()

    def _commit(self, items: list[dict], recovered: bool) -> int:
        rows = queue_for_review(self.lakehouse, items)  # idempotent per item: recovery needs no extra check
        self.items += len(items)
        self.tasks += len(rows)
        return len(rows)
