"""Validated SQL identifiers and three-level table names (`catalog.schema.table`, as in Unity Catalog)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def validate_identifier(name: str, *, what: str = "identifier") -> str:
    """Return `name` if it is a plain SQL identifier (letters, digits, underscore), else raise ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"{what} {name!r} is not a valid identifier: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 128 characters)"
        )
    return name


@dataclass(frozen=True, order=True)
class TableName:
    catalog: str
    schema: str
    table: str

    def __post_init__(self) -> None:
        validate_identifier(self.catalog, what="catalog name")
        validate_identifier(self.schema, what="schema name")
        validate_identifier(self.table, what="table name")

    @classmethod
    def parse(cls, name: str, *, catalog: str, schema: str) -> TableName:
        """`table`, `schema.table` or `catalog.schema.table`; missing parts come from the defaults."""
        parts = name.split(".") if isinstance(name, str) else []
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"table name {name!r} must be table, schema.table or catalog.schema.table")
        full = [catalog, schema][: 3 - len(parts)] + parts
        return cls(*full)

    def __str__(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.table}"
