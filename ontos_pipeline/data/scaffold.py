"""`ontos use-case init`: a valid use-case YAML for a loaded table, with columns, categories, response schema and a
starting template inferred from the table (its schema and a look at the values, read without Spark)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from ontos_pipeline.data.loading import looks_like_images
from ontos_pipeline.platform.images import ImageError, open_image
from ontos_pipeline.platform.lakehouse import LocalLakehouse, read_delta
from ontos_pipeline.specs import ITEM_KEY, load_use_case

MAX_CLASSES = 50  # a label column with more distinct values than this is a number (or free text), not classes
CATEGORICAL_SHARE = 0.05  # strings with at most max(20, 5% of rows) distinct values are categorical
TEXT_CHARS = 40  # strings longer than this on average are text
LEAK_SHARE = 0.5  # a column whose cells spell out the row's label this often is not an input
IMAGE_PROBES = 5  # cells opened to tell an image column from a column of file names


class ScaffoldError(ValueError):
    """The table cannot become a use case as asked; the message says what to change."""


@dataclass(frozen=True)
class Scaffold:
    path: Path
    text: str
    categories: dict[str, str]  # sheet column -> category
    response: dict
    leaks: tuple[str, ...] = ()  # columns that spell out the label: in the sheet as metadata, never inputs


def _spec_type(t: pa.DataType) -> str | None:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return None


def _readable_images(cells: Sequence[str], root: str) -> bool:
    """True when the first cells open as images (relative paths under the files folder `root`): an image column,
    not file names (such as the `file` column of a loaded image folder, relative to the folder it came from)."""
    try:
        for cell in cells[:IMAGE_PROBES]:
            open_image(cell, root).close()
    except (ImageError, OSError):
        return False
    return True


def _spells_the_label(column: pa.ChunkedArray, labels: pa.ChunkedArray) -> bool:
    """True when most rows' cell holds the row's label as a word (`rust/3.png` for `rust`): such a column gives
    the answer away in training and is not there for new items, so it is no input."""
    rows = zip(column.to_pylist(), labels.to_pylist(), strict=True)
    pairs = [(cell, str(label)) for cell, label in rows if cell and label is not None]
    if not pairs:
        return False
    hits = sum(label in re.split(r"[^\w-]+", cell) for cell, label in pairs)
    return hits > LEAK_SHARE * len(pairs)


def _category(name: str, kind: str, column: pa.ChunkedArray, rows: int, root: str) -> str:
    if kind in ("integer", "double"):
        return "numeric"
    if kind == "boolean":
        return "categorical"
    if kind != "string":
        return "metadata"
    values = column.drop_null()
    sample = values.slice(0, 200).to_pylist()
    if looks_like_images(sample) and _readable_images(sample, root):
        return "image"
    distinct = pc.count_distinct(values).as_py()
    mean_chars = pc.mean(pc.utf8_length(values)).as_py() or 0
    if mean_chars > TEXT_CHARS:
        return "text"
    if distinct <= max(20, CATEGORICAL_SHARE * rows):
        return "categorical"
    return "metadata" if distinct == len(values) else "text"  # ids are metadata, other short strings text


def _response(label: str, kind: str, column: pa.ChunkedArray) -> dict:
    values = column.drop_null()
    if len(values) == 0:
        raise ScaffoldError(f"the label column {label!r} has no values; load labelled rows or use --classes")
    distinct = pc.unique(values).to_pylist()
    if kind in ("integer", "double") and (kind == "double" or len(distinct) > MAX_CLASSES):
        return {"type": "integer" if kind == "integer" else "number"}
    if len(distinct) > MAX_CLASSES:
        raise ScaffoldError(
            f"the label column {label!r} has {len(distinct)} distinct values: too many classes for an enum "
            f"(at most {MAX_CLASSES}); pick another --label-column or group the values"
        )
    if len(distinct) < 2:
        raise ScaffoldError(f"the label column {label!r} has a single value ({distinct[0]!r}); nothing to learn")
    return {"type": "string", "enum": sorted(str(v).lower() if kind == "boolean" else str(v) for v in distinct)}


class _Literal(str):
    """A string YAML writes as a `|` block."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def scaffold(
    lakehouse: LocalLakehouse,
    name: str,
    table: str,
    out: Path,
    label_column: str | None = None,
    classes: Sequence[str] = (),
    number: bool = False,
) -> Scaffold:
    """Infer a use case for `table` and return its YAML (checked by the spec loader; not yet written)."""
    full = lakehouse.name(table)
    if not lakehouse.exists(full):
        raise ScaffoldError(f"table {full} does not exist; load it first (`ontos data load FILE --table {table}`)")
    data = read_delta(lakehouse.path(full))
    source = full.table
    types = {f.name: _spec_type(f.type) for f in data.schema}
    unsupported = [n for n, t in types.items() if t is None]
    if unsupported:
        raise ScaffoldError(f"{full}: columns {', '.join(unsupported)} have types a sheet cannot hold")
    if ITEM_KEY not in types:
        raise ScaffoldError(f"{full} has no {ITEM_KEY} column; load it with `ontos data load`, which adds one")
    if sum(x is not None for x in (label_column, classes or None, number or None)) != 1:
        raise ScaffoldError("say what to predict: --label-column COLUMN, or --classes a,b,c, or --number")
    if label_column is not None:
        if label_column not in types or label_column == ITEM_KEY:
            raise ScaffoldError(
                f"{full} has no label column {label_column!r}; its columns are {', '.join(n for n in types)}"
            )
        response = _response(label_column, types[label_column], data.column(label_column))
    elif classes:
        response = {"type": "string", "enum": sorted(dict.fromkeys(classes))}
    else:
        response = {"type": "number"}

    columns = [
        {"name": ITEM_KEY, "from": f"{source}.{ITEM_KEY}", "type": "string", "category": "metadata", "nullable": False}
    ]
    categories: dict[str, str] = {}
    leaks: set[str] = set()  # columns that spell out the label (an image folder's `file`: rust/3.png)
    for column, kind in types.items():
        if column in (ITEM_KEY, label_column):
            continue
        categories[column] = _category(column, kind, data.column(column), data.num_rows, lakehouse.volume_path())
        spelled = label_column is not None and kind == "string" and categories[column] != "image"
        if spelled and _spells_the_label(data.column(column), data.column(label_column)):
            categories[column] = "metadata"  # kept in the sheet, never an input
            leaks.add(column)
        columns.append({"name": column, "from": f"{source}.{column}", "type": kind, "category": categories[column]})
    shown = [c for c, cat in categories.items() if cat != "image" and c not in leaks]
    if not shown:  # only images: the prompt names them (content-addressed cells), never an id that may leak
        shown = [c for c, cat in categories.items() if cat == "image"]
    target = label_column or "label"
    doc = {
        "name": name,
        "title": name.replace("_", " ").capitalize(),
        "description": _Literal(
            f"Predict {target} for the items of {full}. Generated by `ontos use-case init`; edit freely.\n"
        ),
        "sheet": {
            "primary": source,
            "sources": {source: {"table": str(full), "columns": dict(types)}},
            "columns": columns,
        },
        "labels": {"label_type": target, **({"column": f"{source}.{label_column}"} if label_column else {})},
        "template": {
            "name": f"{name}_v1",
            "system_prompt": f"Predict the {target} of an item from its columns. Answer with the value only.",
            "prompt": _Literal("".join(f"{c}: {{{{ {c} }}}}\n" for c in shown) or "Item {{ item_ref }}\n"),
            "response_schema": response,
        },
    }
    text = f"# Use case {name}: generated by `ontos use-case init` from {full}; edit freely.\n" + yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, width=120
    )
    return Scaffold(out, text, categories, response, tuple(sorted(leaks)))


def write_scaffold(result: Scaffold, force: bool = False) -> None:
    """Write the YAML after the spec loader accepted it; an existing file is kept unless `force`."""
    if result.path.exists() and not force:
        raise ScaffoldError(f"{result.path} exists; pass --force to replace it, or --out another file")
    result.path.parent.mkdir(parents=True, exist_ok=True)
    partial = result.path.with_name(f".{result.path.name}.partial")
    partial.write_text(result.text, encoding="utf-8")
    try:
        load_use_case(partial)  # the file must be valid before it becomes a use case
    except Exception:
        partial.unlink()
        raise
    partial.replace(result.path)
