"""Small files people hand to the `ontos` commands (decisions, feedback): parsed with exact line numbers."""

from __future__ import annotations

import json
from collections.abc import Iterable


def jsonl_records(lines: Iterable[str], name: str, error: type[Exception]) -> list[tuple[str, object]]:
    """(`name:line`, parsed value) for each non-empty line; a line that is not JSON raises `error` naming it."""
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append((f"{name}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise error(f"{name}:{number}: not JSON ({exc.msg})") from None
    return records
