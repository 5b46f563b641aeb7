"""JSON as the standard defines it: Python's `json` also reads `NaN`, `Infinity` and `-Infinity`, and turns numbers
too large for a float (`1e400`) into infinity. None of those is a value a label, a correction or a request can
carry: a NaN correction validated against a number schema (every comparison with NaN is false) and then failed
every later training. Every parser of outside JSON goes through `loads`."""

from __future__ import annotations

import json
import math


class NonFiniteNumber(ValueError):
    """The text holds NaN, an infinity or a number out of the float range."""


def _constant(name: str) -> float:
    raise NonFiniteNumber(f"{name} is not a JSON number; send a finite number or null")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{text[:40]} is out of the range of a double; send a finite number")
    return value


def loads(text: str | bytes) -> object:
    """`json.loads` that refuses NaN, Infinity and out-of-range numbers (NonFiniteNumber, a ValueError)."""
    return json.loads(text, parse_constant=_constant, parse_float=_float)
