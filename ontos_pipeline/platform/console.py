"""Tables for people: plain text for the `ontos` commands and the demo, markdown for Dagster metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*cells[0]), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt.format(*r) for r in cells[1:]])


def markdown_table(
    rows: Sequence[Sequence[object]], columns: Sequence[str], width: int = 120, empty: str = "(none)"
) -> str:
    """A markdown table; cells are flattened to one line, `|` escaped and cut to `width` characters."""
    if not rows:
        return empty

    def cell(value: object) -> str:
        text = (
            "" if value is None else (json.dumps(value, default=str) if isinstance(value, dict | list) else str(value))
        )
        text = text.replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])
