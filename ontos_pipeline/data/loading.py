"""`ontos data load`: a CSV, Parquet or JSONL file, or a folder of images, into a typed lakehouse table.

Every problem is found before anything is written and reported together (file, row, column, what to do). Headers
become identifiers (`Body Mass (g)` -> `body_mass_g`); CSV values are typed by inference (boolean, integer,
double, date, timestamp, else string) unless `types` says otherwise. The table gets one `item_ref` key: the `key`
column given, an `item_ref` column of the file, or the file's row numbers (`<table>-000001`, stable when the same
file is loaded again). Image cells (a path, or inline base64 / data-URL content) are verified and stored
content-addressed under the lakehouse's files folder, so a table never points outside it. The table is written in
one commit: `replace` swaps the whole table, `upsert` replaces the rows whose key is in the file and adds the rest;
loading the same file twice gives the same table.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ontos_pipeline.platform.identifiers import validate_identifier
from ontos_pipeline.platform.images import ImageError, image_bytes, is_inline, open_image, relative_cell, store_image
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.specs import COLUMN_TYPES, ITEM_KEY

FILE_KINDS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
MODES = ("replace", "upsert")
MAX_PROBLEMS = 20
ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_PATTERNS = {  # inference order: the first type every non-null value matches
    "boolean": re.compile(r"^(true|false|TRUE|FALSE|True|False)$"),
    "integer": re.compile(r"^[+-]?\d{1,18}$"),
    "double": re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|Infinity)$"),
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "timestamp": re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"),
}


class LoadError(ValueError):
    """The input cannot be loaded; the message lists every problem found. Nothing was written."""


@dataclass(frozen=True)
class LoadedTable:
    table: str
    rows: int
    version: int
    columns: dict[str, str]  # column -> spec type, in table order
    key: str  # where item_ref came from: a column name, or "row numbers"
    renamed: dict[str, str] = field(default_factory=dict)  # header -> column name
    images: dict[str, int] = field(default_factory=dict)  # image column -> files stored


class _Problems:
    """Collects every problem (up to MAX_PROBLEMS shown) so one run reports them all."""

    def __init__(self, source: Path):
        self.source, self.items = source, []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_any(self) -> None:
        if self.items:
            shown = self.items[:MAX_PROBLEMS]
            more = len(self.items) - len(shown)
            raise LoadError(
                f"cannot load {self.source}: {len(self.items)} problem(s), nothing was written:\n  "
                + "\n  ".join(shown)
                + (f"\n  ... and {more} more" if more else "")
            )


def column_name(header: str) -> str:
    """A header as a column identifier: lower case, runs of other characters become `_`."""
    name = re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")
    if name and name[0].isdigit():
        name = f"c_{name}"
    return name


# -- reading ------------------------------------------------------------------------------------------------------
def _read_csv(path: Path, problems: _Problems) -> tuple[list[str], dict[str, list], list[str]]:
    """Header, values per header (None for NULL_TOKENS) and each row's `line N` (exact, quoted newlines too)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise LoadError(f"cannot load {path}: the file is empty; a CSV needs a header row")
        values: dict[str, list] = {h: [] for h in header}
        lines: list[str] = []
        if len(values) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise LoadError(f"cannot load {path}: duplicate header(s) {', '.join(dupes)}; rename them")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                problems.add(f"line {reader.line_num}: {len(row)} values for {len(header)} columns")
                continue
            for h, v in zip(header, row, strict=True):
                values[h].append(None if v.strip() in NULL_TOKENS else v)
            lines.append(f"line {reader.line_num}")
    return header, values, lines


def _read_jsonl(path: Path, problems: _Problems) -> tuple[list[str], dict[str, list], list[str]]:
    rows: list[tuple[int, dict]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.add(f"line {number}: not JSON ({exc.msg})")
                continue
            if not isinstance(value, dict):
                problems.add(f"line {number}: expected a JSON object, got {type(value).__name__}")
                continue
            rows.append((number, value))
    header = list(dict.fromkeys(k for _, r in rows for k in r))
    values: dict[str, list] = {h: [] for h in header}
    for number, row in rows:
        for h in header:
            v = row.get(h)
            if isinstance(v, dict | list):
                problems.add(f"line {number}: column {h!r} holds a nested value; flatten it or store JSON text")
                v = None
            values[h].append(None if v is None else v if isinstance(v, str) else json.dumps(v))
    return header, values, [f"line {number}" for number, _ in rows]


def _read_parquet(path: Path) -> tuple[list[str], dict[str, pa.Array], list[str]]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise LoadError(f"cannot load {path}: not a readable Parquet file ({exc})") from None
    columns = {n: table.column(n).combine_chunks() for n in table.column_names}
    return table.column_names, columns, [f"row {i + 1}" for i in range(table.num_rows)]


def _arrow_kind(array: pa.Array) -> str | None:
    t = array.type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return None


# -- typing -------------------------------------------------------------------------------------------------------
def infer_type(values: Sequence[str | None]) -> str:
    """The narrowest spec type every non-null text value parses as (string when none fits or all are null)."""
    present = [v.strip() for v in values if v is not None]
    if not present:
        return "string"
    for kind, pattern in _PATTERNS.items():
        if all(pattern.match(v) for v in present):
            return kind
    return "string"


def _typed(values: Sequence[str | None], kind: str, column: str, problems: _Problems, line) -> pa.Array:
    """Text values as an Arrow array of `kind`; each value that does not parse is a problem naming its row."""
    if kind == "string":
        return pa.array(values, pa.string())
    pattern = _PATTERNS[kind]
    bad = [i for i, v in enumerate(values) if v is not None and not pattern.match(v.strip())]
    for i in bad[:MAX_PROBLEMS]:
        problems.add(
            f"{line(i)}, column {column!r}: {values[i]!r} is not {kind}; fix the value, or load the column "
            f"as text (--types {column}=string)"
        )
    if bad:
        return pa.nulls(len(values), ARROW_TYPES[kind])
    text = pa.array([None if v is None else v.strip() for v in values], pa.string())
    if kind == "boolean":
        return pc.equal(pc.utf8_lower(text), "true")
    if kind == "timestamp":
        text = pc.replace_substring_regex(text, r"Z$", "+00:00")
        return pc.cast(pc.cast(text, pa.timestamp("us", tz="UTC")), ARROW_TYPES[kind])
    return pc.cast(text, ARROW_TYPES[kind])


# -- images -------------------------------------------------------------------------------------------------------
def _store_image(cell: str, base: Path, images_dir: Path, files_root: Path) -> str:
    """The path the table keeps for an image cell, relative to the files folder: files already under it stay where
    they are; other files and inline content are stored content-addressed under `images_dir`."""
    path = None if is_inline(cell) else Path(cell) if Path(cell).is_absolute() else base / cell
    image = open_image(cell if path is None else str(path))
    if path is not None and path.resolve().is_relative_to(files_root.resolve()):
        return relative_cell(path, files_root)
    data = path.read_bytes() if path is not None else image_bytes(cell)  # the bytes as sent, not re-encoded
    suffix = path.suffix.lower() if path is not None else f".{(image.format or 'png').lower()}"
    return relative_cell(store_image(data, images_dir, suffix), files_root)


def looks_like_images(values: Sequence[str | None]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(is_inline(v) or v.lower().endswith(IMAGE_SUFFIXES) for v in present)


def _folder_rows(
    folder: Path, metadata: Path | None, problems: _Problems
) -> tuple[list[str], dict[str, list], list[str]]:
    """A folder of images: one row per file (`file`, `image`, and `label` from the sub-folder when there are
    sub-folders), joined with a metadata CSV on its `file` column (relative paths)."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise LoadError(f"cannot load {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
    relative = [p.relative_to(folder).as_posix() for p in files]
    values: dict[str, list] = {
        ITEM_KEY: [r.rsplit(".", 1)[0] for r in relative],
        "file": relative,
        "image": relative,
    }
    if any("/" in r for r in relative):
        values["label"] = [r.split("/")[-2] if "/" in r else None for r in relative]
    metadata = metadata or (folder / "metadata.csv" if (folder / "metadata.csv").exists() else None)
    if metadata is not None:
        header, meta, meta_lines = _read_csv(metadata, problems)
        if "file" not in header:
            raise LoadError(f"cannot load {metadata}: a metadata CSV needs a `file` column (the image's relative path)")
        index = {f: i for i, f in enumerate(meta["file"])}
        for i, f in enumerate(meta["file"]):
            if f not in relative:
                problems.add(f"{metadata.name} {meta_lines[i]}: file {f!r} is not an image in {folder}")
        for h in header:
            if h != "file":
                values.setdefault(h, [meta[h][index[r]] if r in index else None for r in relative])
    return list(values), values, [f"image {r}" for r in relative]


# -- the load -----------------------------------------------------------------------------------------------------
def read_table(
    source: Path,
    lakehouse: LocalLakehouse,
    table: str,
    key: str | None = None,
    types: Mapping[str, str] | None = None,
    image_columns: Sequence[str] = (),
    metadata: Path | None = None,
) -> tuple[pa.Table, LoadedTable]:
    """The typed Arrow table `source` loads as (images already stored), and what it holds; LoadError lists every
    problem. The table is not written."""
    source = Path(source)
    problems = _Problems(source)
    types = dict(types or {})
    if source.is_dir():
        header, raw, labels = _folder_rows(source, metadata, problems)
        image_columns = (*image_columns, "image")
        base = source
    elif source.is_file():
        kind = FILE_KINDS.get(source.suffix.lower())
        if kind is None:
            raise LoadError(
                f"cannot load {source}: unknown file type {source.suffix!r}; load a .csv, .parquet, .jsonl "
                "file or a folder of images"
            )
        header, raw, labels = (
            _read_csv(source, problems)
            if kind == "csv"
            else _read_jsonl(source, problems)
            if kind == "jsonl"
            else _read_parquet(source)
        )
        base = source.parent
    else:
        raise LoadError(f"cannot load {source}: no such file or folder")

    line = labels.__getitem__  # row index -> "line 7" / "row 7" / "image cats/1.png"
    renamed, names = {}, {}
    for h in header:
        name = column_name(h)
        try:
            validate_identifier(name, what="column")
        except ValueError:
            problems.add(f"header {h!r} gives no usable column name; rename it")
            continue
        if name in names.values():
            other = next(k for k, v in names.items() if v == name)
            problems.add(f"headers {other!r} and {h!r} both become column {name!r}; rename one")
        names[h] = name
        if name != h:
            renamed[h] = name
    for column, kind in types.items():
        if kind not in COLUMN_TYPES:
            problems.add(f"--types {column}={kind}: unknown type; use one of {', '.join(COLUMN_TYPES)}")
        elif column not in names.values():
            problems.add(f"--types {column}: no such column; the columns are {', '.join(names.values())}")
    if any(kind not in COLUMN_TYPES for kind in types.values()):
        problems.raise_any()

    rows = len(labels)
    arrays: dict[str, pa.Array] = {}
    kinds: dict[str, str] = {}
    for h in (h for h in header if h in names):
        name, values = names[h], raw[h]
        if isinstance(values, pa.Array):  # Parquet: the file's own types
            kind = _arrow_kind(values)
            if kind is None:
                problems.add(f"column {name!r} is {values.type}; flatten nested columns or store JSON text")
                continue
            if kind == "binary":  # image bytes in a Parquet column: stored like inline content
                values = pa.array([None if b is None else _b64(b) for b in values.to_pylist()], pa.string())
                kind = "string"
                image_columns = (*image_columns, name)
            wanted = types.get(name, kind)
            if wanted != kind:
                values = pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.string())
                arrays[name], kinds[name] = _typed(values.to_pylist(), wanted, name, problems, line), wanted
            else:
                arrays[name] = values.cast(ARROW_TYPES[kind]) if kind != "timestamp" else _utc(values)
                kinds[name] = kind
            continue
        kind = types.get(name) or infer_type(values)
        arrays[name], kinds[name] = _typed(values, kind, name, problems, line), kind

    images: dict[str, int] = {}
    detected = [
        n
        for n, k in kinds.items()
        if k == "string" and not (source.is_dir() and n == "file") and looks_like_images(arrays[n][:200].to_pylist())
    ]
    for name in dict.fromkeys([*image_columns, *detected]):
        if name not in arrays:
            problems.add(f"--image-column {name}: no such column; the columns are {', '.join(arrays)}")
            continue
        images_dir = Path(lakehouse.volume_path("images", str(lakehouse.name(table))))
        stored: list[str | None] = []
        for i, cell in enumerate(arrays[name].to_pylist()):
            try:
                stored.append(None if cell is None else _store_image(cell, base, images_dir, lakehouse.files_root))
            except ImageError as exc:
                problems.add(f"{line(i)}, column {name!r}: {exc}")
                stored.append(None)
        arrays[name] = pa.array(stored, pa.string())
        images[name] = sum(v is not None for v in stored)

    key_name = _key(arrays, kinds, key, table, rows, problems, line)
    problems.raise_any()
    data = pa.table(arrays)
    loaded = LoadedTable(str(lakehouse.name(table)), rows, -1, dict(kinds), key_name, renamed, images)
    return data, loaded


def _key(arrays: dict, kinds: dict, key: str | None, table: str, rows: int, problems: _Problems, line) -> str:
    """Adds or checks the item_ref column; returns where it came from."""
    if key is not None and column_name(key) not in arrays:
        problems.add(f"--key {key}: no such column; the columns are {', '.join(arrays)}")
        return key
    source = column_name(key) if key is not None else ITEM_KEY if ITEM_KEY in arrays else None
    if source is None:
        stem = str(table).split(".")[-1]
        arrays[ITEM_KEY], kinds[ITEM_KEY] = pa.array([f"{stem}-{i + 1:06d}" for i in range(rows)]), "string"
        _move_first(arrays, kinds)
        return "row numbers"
    values = [None if v is None else str(v) for v in arrays[source].to_pylist()]
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        if v is None:
            problems.add(f"{line(i)}: the key column {source!r} is empty; every item needs a key")
        elif v in seen:
            problems.add(
                f"{line(i)}: key {v!r} of column {source!r} is already on {line(seen[v])}; an item key must be "
                "unique (choose another --key, or leave --key out to number the rows)"
            )
        else:
            seen[v] = i
    if source != ITEM_KEY:
        arrays[ITEM_KEY], kinds[ITEM_KEY] = pa.array(values, pa.string()), "string"
        _move_first(arrays, kinds)
    elif kinds[source] != "string":
        arrays[ITEM_KEY], kinds[ITEM_KEY] = pa.array(values, pa.string()), "string"
    return source


def _move_first(arrays: dict, kinds: dict) -> None:
    for d in (arrays, kinds):
        value = d.pop(ITEM_KEY)
        items = list(d.items())
        d.clear()
        d.update({ITEM_KEY: value, **dict(items)})


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _utc(values: pa.Array) -> pa.Array:
    if values.type.tz is None:
        values = pc.assume_timezone(values.cast(pa.timestamp("us")), "UTC")
    return values.cast(ARROW_TYPES["timestamp"])


def load(
    lakehouse: LocalLakehouse,
    source: Path | str,
    table: str,
    key: str | None = None,
    types: Mapping[str, str] | None = None,
    image_columns: Sequence[str] = (),
    metadata: Path | None = None,
    mode: str = "replace",
) -> LoadedTable:
    """Load `source` into `table` in one commit (see the module docstring); LoadError writes nothing."""
    if mode not in MODES:
        raise LoadError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    name = lakehouse.name(table)
    if lakehouse.ddl(name) is not None:
        raise LoadError(
            f"{name} is a workbench table of the pipeline; load data into another schema (e.g. raw.{name.table})"
        )
    data, loaded = read_table(Path(source), lakehouse, table, key, types, image_columns, metadata)
    if mode == "upsert" and lakehouse.exists(name):
        version = lakehouse.merge_arrow(name, data, keys=[ITEM_KEY])
    else:
        version = lakehouse.write_batches(name, data.schema, lambda: iter(data.to_batches()), mode="overwrite")
    return LoadedTable(
        loaded.table,
        lakehouse.row_count(name),
        version,
        loaded.columns,
        loaded.key,
        loaded.renamed,
        loaded.images,
    )
