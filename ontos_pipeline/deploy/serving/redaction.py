"""What the inference log keeps of a request to a PHI endpoint (a sheet with PHI-tagged columns or a consent column).

The log feeds monitoring, gap reports and thumbs-up confirmations, so it obeys the same usage constraints as the
labels: before a row is written, the values of PHI-tagged columns are treated as the spec's `serving.log_phi` says,
in the logged records and in the rendered prompt alike, and then every PHI pattern of the sheet scan (e-mail, phone,
SSN, date of birth) left anywhere in the inputs, prompt, response or error is masked (`[EMAIL]`, ...):
- `redact` (default): the value becomes `[REDACTED <column>]`; monitoring does not assess that column's drift;
- `hash`: the value becomes `hmac-sha256:<hex>` keyed by ONTOS_LOG_KEY (equal values stay equal, none readable);
  monitoring does not assess its drift either;
- `mask`: the value is kept with its PHI patterns masked; its text-length drift is still assessed.
Endpoints with a PII guardrail (`serving.guardrails.pii`) are masked the same way; other endpoints' rows are logged
as sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

from ontos_pipeline.platform.phi import mask
from ontos_pipeline.specs import UseCaseSpec

LOG_KEY = "ONTOS_LOG_KEY"


class LogRedaction:
    """One endpoint's treatment of what it logs (`of(spec)`; the default treats nothing)."""

    def __init__(self, active: bool = False, mode: str = "redact", columns: Sequence[str] = (), key: str = ""):
        self.active, self.mode, self.columns, self._key = active, mode, tuple(columns), key.encode()

    @classmethod
    def of(cls, spec: UseCaseSpec, key: str | None = None) -> LogRedaction:
        mode, columns = spec.serving.log_phi, spec.sheet.phi_columns
        if spec.sheet.holds_phi and mode == "hash" and columns and not key:
            raise ValueError(
                f"use case {spec.name}: serving.log_phi is hash, which needs a secret key in {LOG_KEY}; set it in "
                "the serving process's environment"
            )
        # an endpoint with a PII guardrail logs like a PHI one: its decisions are logged, the PII itself never
        return cls(spec.sheet.holds_phi or spec.serving.guardrails.pii.active, mode, columns, key or "")

    def value(self, column: str, value: object) -> object:
        """A PHI-tagged column's value as logged."""
        if value is None:
            return None
        if self.mode == "redact":
            return f"[REDACTED {column}]"
        if self.mode == "hash":
            data = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            return "hmac-sha256:" + hmac.new(self._key, data.encode(), hashlib.sha256).hexdigest()
        return mask(value) if isinstance(value, str) else value

    def records(self, records: Sequence[object]) -> list[object]:
        """The records as logged: tagged columns treated, PHI patterns masked in every string."""
        if not self.active:
            return list(records)
        out = []
        for record in records:
            if isinstance(record, Mapping):
                record = {k: self.value(k, v) if k in self.columns else v for k, v in record.items()}
            out.append(_masked(record))
        return out

    def prompt(self, prompt: str, records: Sequence[object]) -> str:
        """A rendered prompt as logged: each tagged value it quotes replaced as in the records, then masked."""
        if not self.active:
            return prompt
        for record in records:
            if isinstance(record, Mapping):
                for column in self.columns:
                    value = record.get(column)
                    if isinstance(value, str) and value:
                        prompt = prompt.replace(value, str(self.value(column, value)))
        return mask(prompt)

    def masked(self, value: object) -> object:
        """A JSON value (the predictions) with PHI patterns masked in every string."""
        return _masked(value) if self.active else value

    def body(self, text: str) -> str:
        """A request body as logged before it is understood: a JSON list of records (`inline_images.loggable`)
        treated as records, anything else masked as text."""
        if not self.active:
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return mask(text)
        if isinstance(value, list):
            return json.dumps(self.records(value), ensure_ascii=False, default=str)
        return mask(text)

    def text(self, text: str | None) -> str | None:
        """Free text as logged (a raw body that did not parse, a response, an error message)."""
        return mask(text) if self.active and text else text


def hidden_in_log(spec: UseCaseSpec) -> tuple[str, ...]:
    """The columns whose logged values say nothing of the sent ones (PHI-tagged, redact or hash): not monitored."""
    return spec.sheet.phi_columns if spec.sheet.holds_phi and spec.serving.log_phi in ("redact", "hash") else ()


def _masked(value: object) -> object:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


NO_REDACTION = LogRedaction()
