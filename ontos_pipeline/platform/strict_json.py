"""JSON as the standard defines it: Python's `json` also reads `NaN`, `Infinity` and `-Infinity`, and turns numbers
too large for a float (`1e400`) into infinity. None of those is a value a label, a correction or a request can
carry: a NaN correction validated against a number schema (every comparison with NaN is false) and then failed
every later training. It also reads a lone surrogate (`"\\ud800"`), a string no UTF-8 writer can store, and
recurses without bound on nesting. Every parser of outside JSON goes through `loads`."""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 64  # arrays and objects inside one another: a request, a label or a correction needs a handful
_SURROGATE = re.compile("[\ud800-\udfff]")


class Unstorable(ValueError):
    """JSON text that Python reads but no table should keep (the two kinds below)."""


class NonFiniteNumber(Unstorable):
    """The text holds NaN, an infinity or a number out of the float range."""


class BadText(Unstorable):
    """The text is JSON no table can keep: nested deeper than MAX_DEPTH, or a string with a lone surrogate."""


def _constant(name: str) -> float:
    raise NonFiniteNumber(f"{name} is not a JSON number; send a finite number or null")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{text[:40]} is out of the range of a double; send a finite number")
    return value


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> object:
    """`json.loads` that refuses NaN, Infinity and out-of-range numbers (NonFiniteNumber), and nesting deeper than
    `max_depth` or lone surrogates in strings or keys (BadText); both are `Unstorable` ValueErrors."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise BadText(f"the JSON is nested deeper than {max_depth} levels") from None
    _check(value, max_depth)
    return value


def _check(value: object, max_depth: int) -> None:
    stack = [(value, 0)]  # iterative: the depth is the point
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BadText(f"the string {item[:40]!r} holds a lone surrogate (not a Unicode character)")
        elif isinstance(item, list | dict):
            if depth >= max_depth:
                raise BadText(f"the JSON is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
