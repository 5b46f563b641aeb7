"""Label files and label values, without Spark: the inbox of label files people drop or import, the parsing of
CSV/JSONL label files with exact line numbers, and the validation of a label against a response schema.

Used by `canonical_labels` (through `label.labels`) and by the `ontos` commands that take labels from people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from ontos_pipeline.platform import strict_json
from ontos_pipeline.platform.files import BadLine, TextFileError, csv_records, jsonl_records, read_text_file
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, USES

INBOX_SUFFIXES = (".csv", ".jsonl")

# A label candidate, as every label source delivers it (`label.labels.CANDIDATE_SCHEMA` in Spark).
CANDIDATE_FIELDS = (
    (ITEM_KEY, "string"),
    ("label_data", "string"),  # JSON text of the label value
    ("confidence", "double"),
    ("source", "string"),
    ("source_ref", "string"),
    ("labeled_by", "string"),
    ("allowed_uses", "array<string>"),
    ("prohibited_uses", "array<string>"),
    ("created_at", "timestamp"),
    ("error", "string"),  # set when the record could not even be parsed
)
CANDIDATE_COLUMNS = tuple(name for name, _ in CANDIDATE_FIELDS)


def inbox_dir(lakehouse: Lakehouse, use_case: str) -> Path:
    return Path(lakehouse.volume_path("inbox", use_case))


def parse_label_file(path: Path, kind: str) -> list[dict]:
    """Parse a CSV (header: item_ref,label[,confidence,labeled_by,allowed_uses,prohibited_uses]) or JSONL file."""
    rows: list[dict] = []
    stamp = datetime.fromtimestamp(int(path.stat().st_mtime), UTC)  # stable across re-materializations
    try:
        text = read_text_file(path)
        if path.suffix == ".csv":
            header, records = csv_records(text, path.name)
        else:
            header, records = [], jsonl_records(text.splitlines(), path.name, TextFileError, strict=False)
    except TextFileError as exc:  # the whole file is unusable: one reject naming where, nothing else read
        return [_unusable(exc.where, exc.reason, stamp)]
    if path.suffix == ".csv":
        missing = {ITEM_KEY, "label"} - set(header)
        if missing:
            return [_unusable(f"{path.name}:1", f"the header lacks {', '.join(sorted(missing))}", stamp)]
    for where, record in records:
        if isinstance(record, BadLine):
            rows.append(_unusable(where, record.reason, stamp))
        elif not isinstance(record, dict):
            rows.append(_unusable(where, "expected a JSON object", stamp))
        else:
            rows.append(parse_label_record(record, kind, where, stamp))
    return rows


def _unusable(where: str, reason: str, created_at: datetime) -> dict:
    return {
        **dict.fromkeys(CANDIDATE_COLUMNS),
        "source": "expert",
        "source_ref": where,
        "error": f"{where}: {reason}",
        "created_at": created_at,
    }


def normalize_label(value: object, kind: str) -> str:
    """A label given in a file -> JSON text. Plain strings are accepted for enum/text labels and numbers."""
    if isinstance(value, str):
        text = value.strip()
        if kind in ("object", "number"):
            try:
                return json.dumps(json.loads(text))
            except json.JSONDecodeError:
                return json.dumps(text)  # invalid for the schema: rejected with the reason later
        if text.startswith('"') and text.endswith('"'):
            return json.dumps(json.loads(text))
        return json.dumps(text)
    return json.dumps(value)


def parse_label_record(record: Mapping[str, object], kind: str, where: str, created_at: datetime) -> dict:
    """One CSV row / JSONL object -> a candidate dict (with `error` set when it is unusable)."""
    out = {c: None for c in CANDIDATE_COLUMNS}
    out.update(source="expert", source_ref=where, created_at=created_at)
    item = record.get(ITEM_KEY)
    if item in (None, ""):
        out["error"] = f"{where}: missing {ITEM_KEY}"
        return out
    out[ITEM_KEY] = str(item)
    if record.get("label") in (None, ""):
        out["error"] = f"{where}: missing label"
        return out
    out["label_data"] = normalize_label(record["label"], kind)
    try:
        confidence = record.get("confidence")
        out["confidence"] = 1.0 if confidence in (None, "") else float(confidence)  # type: ignore[arg-type]
        if not 0.0 <= out["confidence"] <= 1.0:
            raise ValueError
    except (TypeError, ValueError):
        out["error"] = f"{where}: confidence must be a number between 0 and 1, got {record.get('confidence')!r}"
    out["labeled_by"] = str(record.get("labeled_by") or "expert")
    for key in ("allowed_uses", "prohibited_uses"):
        value = record.get(key)
        if isinstance(value, str):
            value = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
        if value not in (None, []) and (
            not isinstance(value, list) or not all(isinstance(v, str) and v in USES for v in value)
        ):
            out["error"] = f"{where}: {key} must be a list of {', '.join(USES)}, got {value!r}"
            value = None  # the row is rejected with the reason; the column keeps only valid lists
        out[key] = value or None
    return out


def response_validator(schema: Mapping[str, object]):
    """A JSON-schema validator for responses (formats such as `date` are checked)."""
    import jsonschema

    return jsonschema.Draft202012Validator(dict(schema), format_checker=jsonschema.FormatChecker())


def validate_label(validator, text: str | None) -> tuple[str | None, str | None]:
    import jsonschema

    if text is None:
        return "label is empty", None
    try:
        value = strict_json.loads(text)
    except strict_json.Unstorable as exc:
        return f"label is not valid JSON ({exc})", None
    except json.JSONDecodeError as exc:
        return f"label is not JSON ({exc.msg})", None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        return f"does not match the response schema{' at ' + where if where else ''}: {error.message}", None
    return None, json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
