"""Files: the small files people hand to the `ontos` commands (decisions, feedback), parsed with exact line numbers,
and where a Databricks runtime mounts DBFS and volumes."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ontos_pipeline.platform import strict_json


class TextFileError(ValueError):
    """A user's file that is not readable text: `where` (`name:line`) and `reason`."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that is not JSON (what `jsonl_records(strict=False)` gives in its place)."""

    reason: str


def read_text_file(path: Path | str) -> str:
    """A user's text file (CSV, JSONL, YAML): UTF-8, a leading BOM dropped (spreadsheets write one); TextFileError
    naming the file, line and byte when it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TextFileError(
            f"{Path(path).name}:{line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def csv_records(text: str, name: str) -> tuple[list[str], list[tuple[str, dict]]]:
    """(header, [(`name:line`, row)]) of CSV text; a row the csv module cannot read (an unclosed quote, a field over
    its 131,072-character limit) raises TextFileError naming the line."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = list(reader.fieldnames or [])
        for row in reader:
            rows.append((f"{name}:{reader.line_num}", row))
    except csv.Error as exc:
        reason = f"not readable as CSV ({exc}); long values belong in a JSONL file"
        raise TextFileError(f"{name}:{reader.line_num}", reason) from None
    return header, rows


def jsonl_records(
    lines: Iterable[str], name: str, error: type[Exception], strict: bool = True
) -> list[tuple[str, object]]:
    """(`name:line`, parsed value) for each non-empty line; a line that is not JSON raises `error` naming it, or with
    `strict=False` stands as a BadLine."""
    records: list[tuple[str, object]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            where = f"{name}:{number}"
            try:
                records.append((where, strict_json.loads(line)))
            except (strict_json.Unstorable, json.JSONDecodeError) as exc:
                reason = f"not JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                if strict:
                    raise error(f"{where}: {reason}") from None
                records.append((where, BadLine(reason)))
    return records


FUSE_ROOT_VARIABLE = "ONTOS_FUSE_ROOT"  # where /dbfs and /Volumes are mounted; empty on Databricks


def fuse_path(path: str) -> str:
    """The local path of a DBFS path (`/tmp/x`, `dbfs:/tmp/x`) or a volume path (`/Volumes/...`)."""
    root = os.environ.get(FUSE_ROOT_VARIABLE, "")
    if path.startswith("/Volumes/"):
        return root + path
    return root + "/dbfs/" + path.removeprefix("dbfs:").lstrip("/")
