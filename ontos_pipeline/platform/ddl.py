"""Table schemas from the DDL files in `schemas/` (the single source of table schemas).

Each file holds one `CREATE TABLE IF NOT EXISTS {catalog}.{schema}.<name> (...) USING DELTA` statement, one column
per line. The same text is executed on Unity Catalog (placeholders filled in) and parsed here into Spark and Arrow
schemas for the local target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from ontos_pipeline.platform.identifiers import validate_identifier

if TYPE_CHECKING:
    from pyspark.sql import types as T

_PACKAGED = Path(__file__).resolve().parents[1] / "schemas"  # where a wheel puts them
SCHEMAS_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "schemas"

_STATEMENT = re.compile(
    r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+\{catalog\}\.\{schema\}\.(\w+)\s*\((.*)\)\s*USING\s+DELTA"
    r"(?:\s+COMMENT\s+'([^']*)')?\s*;?\s*$",
    re.S | re.I,
)
_COLUMN = re.compile(r"^(\w+)\s+([A-Z]+(?:<[A-Z, ]+>)?)(\s+NOT\s+NULL)?(?:\s+COMMENT\s+'([^']*)')?$", re.I)

# Logical column types shared by use-case specs and DDL -> (Spark type name, Arrow type). Spark types are made on
# demand: reading DDL for Arrow (record tables, the CLI) does not import pyspark.
_SCALARS: dict[str, tuple[str, pa.DataType]] = {
    "STRING": ("StringType", pa.string()),
    "VARIANT": ("StringType", pa.string()),  # JSON text, on both targets (see UnityCatalogLakehouse.ensure)
    "BIGINT": ("LongType", pa.int64()),
    "INT": ("IntegerType", pa.int32()),
    "DOUBLE": ("DoubleType", pa.float64()),
    "BOOLEAN": ("BooleanType", pa.bool_()),
    "DATE": ("DateType", pa.date32()),
    "TIMESTAMP": ("TimestampType", pa.timestamp("us", tz="UTC")),
}
SPEC_TYPES = {
    "string": "STRING",
    "integer": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


class DDLError(ValueError):
    """A DDL file cannot be parsed."""


def spark_type(sql_type: str) -> T.DataType:
    from pyspark.sql import types as T

    def build(t: str) -> T.DataType:
        if t in _SCALARS:
            return getattr(T, _SCALARS[t][0])()
        if m := re.fullmatch(r"ARRAY<(\w+)>", t):
            return T.ArrayType(build(m.group(1)), True)
        m = re.fullmatch(r"MAP<(\w+),(\w+)>", t)
        return T.MapType(build(m.group(1)), build(m.group(2)), True)

    arrow_type(sql_type)  # validates
    return build(re.sub(r"\s+", "", sql_type.upper()))


def arrow_type(sql_type: str) -> pa.DataType:
    t = re.sub(r"\s+", "", sql_type.upper())
    if t in _SCALARS:
        return _SCALARS[t][1]
    if m := re.fullmatch(r"ARRAY<(\w+)>", t):
        return pa.list_(arrow_type(m.group(1)))
    if m := re.fullmatch(r"MAP<(\w+),(\w+)>", t):
        return pa.map_(arrow_type(m.group(1)), arrow_type(m.group(2)))
    raise DDLError(f"unsupported column type {sql_type!r}")


@dataclass(frozen=True)
class DDLColumn:
    name: str
    sql_type: str
    nullable: bool
    comment: str = ""


@dataclass(frozen=True)
class TableDDL:
    name: str
    columns: tuple[DDLColumn, ...]
    comment: str
    sql: str

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    def spark_schema(self) -> T.StructType:
        from pyspark.sql import types as T

        return T.StructType([T.StructField(c.name, spark_type(c.sql_type), True) for c in self.columns])

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, arrow_type(c.sql_type), True) for c in self.columns])

    def render(self, catalog: str, schema: str) -> str:
        """The statement with the placeholders filled in (identifiers validated), for Unity Catalog."""
        return self.sql.replace("{catalog}", validate_identifier(catalog, what="catalog")).replace(
            "{schema}", validate_identifier(schema, what="schema")
        )


def parse_ddl(text: str, *, source: str = "<ddl>") -> TableDDL:
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--")).strip()
    m = _STATEMENT.match(body)
    if not m:
        raise DDLError(
            f"{source}: expected one 'CREATE TABLE IF NOT EXISTS {{catalog}}.{{schema}}.<name> (...) "
            "USING DELTA' statement"
        )
    name, cols, comment = m.group(1), m.group(2), m.group(3) or ""
    columns = []
    for i, line in enumerate(x.strip().rstrip(",") for x in cols.strip().splitlines()):
        cm = _COLUMN.match(line)
        if not cm:
            raise DDLError(f"{source}: column line {i + 1} {line!r} is not 'name TYPE [NOT NULL] [COMMENT '...']'")
        arrow_type(cm.group(2))
        columns.append(DDLColumn(cm.group(1), cm.group(2).upper(), cm.group(3) is None, cm.group(4) or ""))
    return TableDDL(name, tuple(columns), comment, body)


@cache
def load_ddl(name: str) -> TableDDL:
    """The parsed DDL of a workbench table, e.g. `load_ddl("sheets")`."""
    path = SCHEMAS_DIR / f"{validate_identifier(name, what='table name')}.sql"
    if not path.exists():
        raise DDLError(f"no DDL for table {name!r}: expected {path}")
    ddl = parse_ddl(path.read_text(encoding="utf-8"), source=str(path))
    if ddl.name != name:
        raise DDLError(f"{path}: declares table {ddl.name!r}, expected {name!r} (the file name)")
    return ddl


def all_ddl() -> dict[str, TableDDL]:
    return {p.stem: load_ddl(p.stem) for p in sorted(SCHEMAS_DIR.glob("*.sql"))}
