"""Files: the small files people hand to the `ontos` commands (decisions, feedback), parsed with exact line numbers,
and where a Databricks runtime mounts DBFS and volumes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from ontos_pipeline.platform import strict_json


def jsonl_records(lines: Iterable[str], name: str, error: type[Exception]) -> list[tuple[str, object]]:
    """(`name:line`, parsed value) for each non-empty line; a line that is not JSON raises `error` naming it."""
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append((f"{name}:{number}", strict_json.loads(line)))
            except strict_json.Unstorable as exc:
                raise error(f"{name}:{number}: {exc}") from None
            except json.JSONDecodeError as exc:
                raise error(f"{name}:{number}: not JSON ({exc.msg})") from None
    return records


FUSE_ROOT_VARIABLE = "ONTOS_FUSE_ROOT"  # where /dbfs and /Volumes are mounted; empty on Databricks


def fuse_path(path: str) -> str:
    """The local path of a DBFS path (`/tmp/x`, `dbfs:/tmp/x`) or a volume path (`/Volumes/...`)."""
    root = os.environ.get(FUSE_ROOT_VARIABLE, "")
    if path.startswith("/Volumes/"):
        return root + path
    return root + "/dbfs/" + path.removeprefix("dbfs:").lstrip("/")
