"""The PHI patterns the sheet's quality scan looks for, and masking them out of text (the inference log).

The patterns are written in the common subset of Java (Spark `rlike`, the sheet scan) and Python (`re`, masking),
so both find the same things. A date of birth counts only next to a DOB keyword: invoice and visit dates stay.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PHI_PATTERNS: Mapping[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone": r"(\+?1[ .-]?)?(\(\d{3}\)|\b\d{3})[ .-]\d{3}[ .-]\d{4}\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "date_of_birth": r"(?i)\b(dob|d\.o\.b\.|date of birth|born( on)?)\b\W{0,3}"
    r"(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|[A-Z][a-z]{2,8}\.? \d{1,2},? \d{4})",
}
_COMPILED = {kind: re.compile(pattern) for kind, pattern in PHI_PATTERNS.items()}


def mask(text: str) -> str:
    """`text` with every PHI pattern match replaced by its kind in brackets (`[EMAIL]`, `[SSN]`, ...)."""
    return scan(text)[0]


def scan(text: str) -> tuple[str, dict[str, int]]:
    """`text` masked as `mask` does, and how many matches of each kind were masked (only the kinds found): what a
    guardrail decides on and records, never the matched text itself."""
    counts: dict[str, int] = {}
    for kind, pattern in _COMPILED.items():
        text, n = pattern.subn(f"[{kind.upper()}]", text)
        if n:
            counts[kind] = n
    return text, counts


def found(text: str) -> list[str]:
    """The PHI kinds that occur in `text`."""
    return [kind for kind, pattern in _COMPILED.items() if pattern.search(text)]
