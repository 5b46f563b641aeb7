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

import pyarrow as pa
from pyspark.sql import types as T

from ontos_pipeline.identifiers import validate_identifier

_PACKAGED = Path(__file__).resolve().parent / "schemas"  # where a wheel puts them
SCHEMAS_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parent.parent / "schemas"

_STATEMENT = re.compile(
    r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+\{catalog\}\.\{schema\}\.(\w+)\s*\((.*)\)\s*USING\s+DELTA"
    r"(?:\s+COMMENT\s+'([^']*)')?\s*;?\s*$",
    re.S | re.I,
)
_COLUMN = re.compile(r"^(\w+)\s+([A-Z]+(?:<[A-Z, ]+>)?)(\s+NOT\s+NULL)?(?:\s+COMMENT\s+'([^']*)')?$", re.I)

# Logical column types shared by use-case specs and DDL -> (Spark type, Arrow type).
_SCALARS: dict[str, tuple[T.DataType, pa.DataType]] = {
    "STRING": (T.StringType(), pa.string()),
    "VARIANT": (T.StringType(), pa.string()),  # JSON text, on both targets (see UnityCatalogLakehouse.ensure)
    "BIGINT": (T.LongType(), pa.int64()),
    "INT": (T.IntegerType(), pa.int32()),
    "DOUBLE": (T.DoubleType(), pa.float64()),
    "BOOLEAN": (T.BooleanType(), pa.bool_()),
    "DATE": (T.DateType(), pa.date32()),
    "TIMESTAMP": (T.TimestampType(), pa.timestamp("us", tz="UTC")),
}
SPEC_TYPES = {"string": "STRING", "integer": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE",
              "timestamp": "TIMESTAMP"}


class DDLError(ValueError):
    """A DDL file cannot be parsed."""


def spark_type(sql_type: str) -> T.DataType:
    return _types(sql_type)[0]


def arrow_type(sql_type: str) -> pa.DataType:
    return _types(sql_type)[1]


def _types(sql_type: str) -> tuple[T.DataType, pa.DataType]:
    t = re.sub(r"\s+", "", sql_type.upper())
    if t in _SCALARS:
        return _SCALARS[t]
    if m := re.fullmatch(r"ARRAY<(\w+)>", t):
        s, a = _types(m.group(1))
        return T.ArrayType(s, True), pa.list_(a)
    if m := re.fullmatch(r"MAP<(\w+),(\w+)>", t):
        (ks, ka), (vs, va) = _types(m.group(1)), _types(m.group(2))
        return T.MapType(ks, vs, True), pa.map_(ka, va)
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
        return T.StructType([T.StructField(c.name, spark_type(c.sql_type), True) for c in self.columns])

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, arrow_type(c.sql_type), True) for c in self.columns])

    def render(self, catalog: str, schema: str) -> str:
        """The statement with the placeholders filled in (identifiers validated), for Unity Catalog."""
        return self.sql.replace("{catalog}", validate_identifier(catalog, what="catalog")).replace(
            "{schema}", validate_identifier(schema, what="schema"))


def parse_ddl(text: str, *, source: str = "<ddl>") -> TableDDL:
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--")).strip()
    m = _STATEMENT.match(body)
    if not m:
        raise DDLError(f"{source}: expected one 'CREATE TABLE IF NOT EXISTS {{catalog}}.{{schema}}.<name> (...) "
                       "USING DELTA' statement")
    name, cols, comment = m.group(1), m.group(2), m.group(3) or ""
    columns = []
    for i, line in enumerate(x.strip().rstrip(",") for x in cols.strip().splitlines()):
        cm = _COLUMN.match(line)
        if not cm:
            raise DDLError(f"{source}: column line {i + 1} {line!r} is not 'name TYPE [NOT NULL] [COMMENT '...']'")
        _types(cm.group(2))
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
