"""Date and amount layouts learned from labelled examples, for the extraction heads' candidate spans.

A date-like span is three parts (digits or a word) joined by separators: "14-MAR-2025", "March 4, 2024",
"04.03.2024". Its *layout* is its shape ("N2-AU3-N4": two digits, an upper-case three-letter word, four digits).
Fitting reads each labelled text with its true dates and records, per layout, which part is the year, the month and
the day (the reading that gives the true date); reading a span then applies the reading its layout was seen with
most. A layout no example showed falls back to the built-in formats (`parse_date`), so a model reads the usual
formats from the start and a new one (a drifted export) as soon as corrected examples of it are trained on.

Amounts work the same way: a number's layout is its shape with the digits collapsed ("9.9,9" for "1.234,56"), and
fitting learns which separator is the decimal one from the true amounts.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from itertools import permutations

MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_PART = r"\d{1,4}|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[A-Za-z]{0,6}\.?"
_SEP = r", |[ ./-]| - "
# a lookahead, so overlapping spans are all found ("from 12 4 March 2024" holds "12 4 March" and "4 March 2024")
DATE_LIKE = re.compile(rf"(?<![\w])(?=(({_PART})({_SEP})({_PART})({_SEP})({_PART}))(?![\w]))")
NUMBER_LIKE = re.compile(r"(?<![\w.,])[$€£]?-?\d(?:[\d.,']*\d)?(?![\w])")
ROLES = ("year", "month", "day")
READINGS = {  # decimal separator -> how to read a number written that way
    ".": lambda s: s.replace(",", "").replace("'", "").replace(" ", ""),
    ",": lambda s: s.replace(".", "").replace("'", "").replace(" ", "").replace(",", "."),
}


def _month(part: str) -> int | None:
    word = part.rstrip(".").lower()
    if len(word) < 3:
        return None
    return next((i for i, name in enumerate(MONTHS, 1) if name.startswith(word) or word == name[:3]), None)


def _shape(part: str) -> str:
    if part.isdigit():
        return f"N{len(part)}"
    word = part.rstrip(".")
    case = "U" if word.isupper() else "T" if word[:1].isupper() else "L"
    return f"A{case}{len(word) if len(word) == 3 else 'W'}{'.' if part.endswith('.') else ''}"


def date_layout(match: re.Match) -> str:
    _, a, s1, b, s2, c = match.groups()
    return f"{_shape(a)}{s1}{_shape(b)}{s2}{_shape(c)}"


def _parts(match: re.Match) -> tuple[str, str, str]:
    return match.group(2), match.group(4), match.group(6)


def _read(parts: Sequence[str], order: Sequence[str]) -> date | None:
    """The date when parts[i] plays role order[i] (a word part can only be the month)."""
    values = {}
    for part, role in zip(parts, order, strict=True):
        if role == "month":
            value = _month(part) if not part.isdigit() else int(part)
        elif not part.isdigit():
            return None
        else:
            value = int(part)
            if role == "year" and len(part) == 2:
                value += 2000 if value < 70 else 1900
            elif role == "year" and len(part) != 4:
                return None
        if value is None:
            return None
        values[role] = value
    try:
        return date(values["year"], values["month"], values["day"])
    except ValueError:
        return None


class DateLayouts:
    """Layout -> the reading (order of year, month, day) learned from examples."""

    def __init__(self) -> None:
        self.readings: dict[str, tuple[str, ...]] = {}
        self.seen: Counter[str] = Counter()

    def fit(self, texts: Iterable[str], truths: Iterable[Iterable[str]]) -> DateLayouts:
        votes: dict[str, Counter] = defaultdict(Counter)
        for text, wanted in zip(texts, truths, strict=True):
            wanted = {w for w in wanted if isinstance(w, str)}
            if not wanted:
                continue
            for m in DATE_LIKE.finditer(text):
                parts = _parts(m)
                for order in permutations(ROLES):
                    found = _read(parts, order)
                    if found is not None and found.isoformat() in wanted:
                        votes[date_layout(m)][order] += 1
        self.readings = {layout: v.most_common(1)[0][0] for layout, v in votes.items()}
        self.seen = Counter({layout: sum(v.values()) for layout, v in votes.items()})
        return self

    def spans(self, text: str, fallback: Callable[[str], str | None]) -> list[tuple[str, int, int, str]]:
        """(ISO date, start, end, source) of every date-like span: by its learned reading, else by `fallback`."""
        out = []
        for m in DATE_LIKE.finditer(text):
            order = self.readings.get(date_layout(m))
            if order is not None:
                found = _read(_parts(m), order)
                value = found.isoformat() if found else None
            else:
                value = fallback(m.group(1))
            if value is not None:  # one source for learned and built-in readings: the ranker sees no difference
                out.append((value, m.start(1), m.end(1), "date"))
        return out


def number_layout(text: str) -> str:
    """The shape of a number with runs of digits collapsed: "$1,234.56" -> "$9,9.9"."""
    return re.sub(r"\d+", "9", text)


class NumberLayouts:
    """Layout -> decimal separator learned from examples (default: the dot, commas group thousands)."""

    def __init__(self) -> None:
        self.decimal: dict[str, str] = {}

    def fit(self, texts: Iterable[str], truths: Iterable[Iterable[float]]) -> NumberLayouts:
        votes: dict[str, Counter] = defaultdict(Counter)
        for text, wanted in zip(texts, truths, strict=True):
            keys = {f"{float(w):.2f}" for w in wanted if isinstance(w, int | float) and not isinstance(w, bool)}
            if not keys:
                continue
            for m in NUMBER_LIKE.finditer(text):
                for separator, read in READINGS.items():
                    value = _number(read(m.group().lstrip("$€£")))
                    if value is not None and f"{value:.2f}" in keys:
                        votes[number_layout(m.group())][separator] += 1
        self.decimal = {layout: v.most_common(1)[0][0] for layout, v in votes.items()}
        return self

    def spans(self, text: str) -> list[tuple[float, int, int, str]]:
        out = []
        for m in NUMBER_LIKE.finditer(text):
            raw = m.group()
            layout = number_layout(raw)
            value = _number(READINGS[self.decimal.get(layout, ".")](raw.lstrip("$€£")))
            if value is not None:
                out.append((value, m.start(), m.end(), "money" if raw[0] in "$€£" else "number"))
        return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
