"""Request bodies of the Databricks serving API -> validated item records (pure; no web framework here).

Accepted shapes (as Databricks Model Serving takes them):
- `{"dataframe_records": [{"col": value, ...}, ...]}`
- `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` (an `index` is allowed and ignored)
- `{"inputs": [{...}, ...]}`, `{"inputs": {"col": [values...]}}` or `{"inputs": {"col": value}}`

An image column's value is a path on the serving host or the image itself (a `data:image/png;base64,...` URL or
bare base64), read by `platform.images` as everywhere else.

Every problem is a `BadRequest` with a 4xx status and a message naming the record and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime

from ontos_pipeline.platform import strict_json
from ontos_pipeline.platform.images import ImageError, is_inline, open_image, served_file
from ontos_pipeline.specs import ITEM_KEY, ColumnSpec

SHAPES = ("dataframe_records", "dataframe_split", "inputs")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadRequest(Exception):
    """A client error: HTTP status, Databricks-style error code and a message that says what to fix."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_json(body: bytes) -> object:
    try:
        return strict_json.loads(body)
    except strict_json.Unstorable as exc:
        raise BadRequest(400, f"the body is not valid JSON: {exc}", "MALFORMED_REQUEST") from None
    except UnicodeDecodeError:
        raise BadRequest(400, "the body is not UTF-8 text; send JSON") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            400, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", "MALFORMED_REQUEST"
        ) from None


def records_of(payload: object, max_rows: int) -> list[dict]:
    """The records of a request in one of the accepted shapes."""
    if not isinstance(payload, Mapping):
        raise BadRequest(400, f"expected a JSON object with one of {', '.join(SHAPES)}")
    shapes = [k for k in SHAPES if k in payload]
    if len(shapes) != 1:
        found = ", ".join(sorted(payload)) or "no fields"
        raise BadRequest(400, f"expected exactly one of {', '.join(SHAPES)}; got {found}")
    shape = shapes[0]
    value = payload[shape]
    if shape == "dataframe_split":
        records = _split(value)
    elif shape == "inputs" and isinstance(value, Mapping):
        records = _columnar(value)
    elif isinstance(value, list):
        records = value
    else:
        raise BadRequest(400, f"'{shape}' must be a list of records")
    if not records:
        raise BadRequest(400, f"'{shape}' holds no records")
    if len(records) > max_rows:
        raise BadRequest(
            413,
            f"{len(records)} records in one request; the limit is {max_rows}: split the batch",
            "REQUEST_LIMIT_EXCEEDED",
        )
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise BadRequest(400, f"record {i} of '{shape}' is not an object of column -> value")
        if r.get(ITEM_KEY) is not None and not isinstance(r[ITEM_KEY], str):
            raise BadRequest(
                400, f"record {i}: '{ITEM_KEY}' must be a string (the item's id), not {_json_kind(r[ITEM_KEY])}"
            )
    return [dict(r) for r in records]


def _json_kind(value: object) -> str:
    return {list: "a list", dict: "an object", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _split(value: object) -> list[dict]:
    if (
        not isinstance(value, Mapping)
        or not isinstance(value.get("columns"), list)
        or not isinstance(value.get("data"), list)
    ):
        raise BadRequest(400, "'dataframe_split' must be an object with 'columns' (a list) and 'data' (rows)")
    columns = value["columns"]
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise BadRequest(400, "'dataframe_split' 'columns' must be distinct column names (strings)")
    out = []
    for i, row in enumerate(value["data"]):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(400, f"'dataframe_split' row {i} must be a list of {len(columns)} values (one per column)")
        out.append(dict(zip(columns, row, strict=True)))
    return out


def _columnar(value: Mapping) -> list[dict]:
    if all(not isinstance(v, list) for v in value.values()):
        return [dict(value)]  # one record given as column -> value
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise BadRequest(400, "'inputs' given as column -> values needs a list of the same length for every column")
    n = lengths.pop()
    return [{k: v[i] for k, v in value.items()} for i in range(n)]


def validate_records(
    records: Sequence[dict],
    required: Sequence[str],
    columns: Mapping[str, ColumnSpec],
    image_root: str | None = None,
    image_folders: Sequence[str] | None = None,
) -> list[dict]:
    """Check every required column is present with its spec type; returns typed copies (dates parsed). An image
    must be readable: inline, or a file (a relative path read under `image_root`, the lakehouse files folder) that
    is a regular file under one of `image_folders` (None: anywhere)."""
    out = []
    for i, record in enumerate(records):
        missing = [c for c in required if c not in record]
        if missing:
            raise BadRequest(
                400, f"record {i}: missing column(s) {', '.join(missing)}; the model needs {', '.join(required)}"
            )
        typed = dict(record)
        for name in required:
            spec = columns.get(name)
            if spec is not None:
                typed[name] = _typed(record[name], spec, i, image_root, image_folders)
        out.append(typed)
    return out


def _typed(
    value: object, spec: ColumnSpec, row: int, image_root: str | None, image_folders: Sequence[str] | None
) -> object:
    where = f"record {row}: column {spec.name!r}"
    if value is None:
        if not spec.nullable:
            raise BadRequest(400, f"{where} may not be null")
        return None
    kind = spec.type
    ok = {
        "string": isinstance(value, str),
        "integer": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "date": isinstance(value, str) and bool(_DATE.match(value)),
        "timestamp": isinstance(value, str),
    }[kind]
    if not ok:
        expected = {"date": "a date string YYYY-MM-DD", "timestamp": "an ISO 8601 timestamp string"}.get(kind, kind)
        raise BadRequest(400, f"{where} must be {expected}, got {json.dumps(value)[:60]}")
    try:
        if kind == "date":
            return date.fromisoformat(value)  # type: ignore[arg-type]
        if kind == "timestamp":
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(400, f"{where}: {value!r} is not a valid {kind}") from None
    if spec.category == "image":
        _check_image(value, where, image_root, image_folders)  # type: ignore[arg-type]
    return int(value) if kind == "integer" else float(value) if kind == "double" else value


def _check_image(value: str, where: str, root: str | None, folders: Sequence[str] | None) -> None:
    """An image column holds a readable image: a file on the serving host, a `data:image/...;base64,` URL or bare
    base64 content; anything else is the client's error (a model would otherwise answer for a blank image)."""
    from PIL import Image

    try:
        if folders is not None and not is_inline(value):
            served_file(value, root, folders)
        open_image(value, root).close()
    except ImageError as exc:
        text = str(exc)
        if text.startswith("no image file at"):
            text += " on the serving host"
        raise BadRequest(400, f"{where}: {text}") from None
    except Image.DecompressionBombError as exc:
        what = "the inline image" if is_inline(value) else repr(value)
        raise BadRequest(400, f"{where}: {what} is too large to decode ({exc})") from None
