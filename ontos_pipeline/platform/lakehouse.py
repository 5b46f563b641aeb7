"""The lakehouse: tables named `<catalog>.<schema>.<table>`, read and written as Spark DataFrames or, for small
record tables, as rows.

`Lakehouse` is the interface the stages use; `LocalLakehouse` keeps Delta tables under `ONTOS_HOME/tables`.
A Unity Catalog implementation plugs in behind the same methods.

Big data (sheet snapshots, training sheets, log scans) goes through Spark: Spark writes the Parquet data files
(distributed, into a fresh folder inside the table), then delta-rs commits them to the Delta log in one atomic
step. A crash before the commit leaves only unreferenced files that no reader sees; an overwrite replaces the whole
table in the same single commit. Small registry and record tables (`records`, `append_records`, `upsert_records`,
`replace_records`, `update_records`) are read and written with delta-rs alone, without Spark: each write is one
Delta transaction, and one that conflicts with a concurrent commit is retried on the new table version, so
concurrent writers never lose each other's rows. Nothing here imports pyspark until a Spark method is called.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, create_table_with_add_actions

from ontos_pipeline.platform.ddl import DDLError, TableDDL, load_ddl
from ontos_pipeline.platform.identifiers import TableName, validate_identifier

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

WRITE_MODES = ("overwrite", "append")
CHECKPOINT_EVERY = 50
COMMIT_ATTEMPTS = 50  # a record write that keeps conflicting (many concurrent writers) gives up after these
T = TypeVar("T")


class LakehouseError(RuntimeError):
    """A table cannot be read or written as asked; the message names the table and what to do."""


class Lakehouse(ABC):
    """Tables by name. Unqualified names live in the workbench schema and follow their DDL in `schemas/`."""

    readable_by_orchestrator = True  # False where tables are only reachable from the compute (Unity Catalog)

    def __init__(self, catalog: str, schema: str):
        self.catalog, self.schema = catalog, schema
        TableName(catalog, schema, "probe")  # validates both identifiers

    # -- names ------------------------------------------------------------------------------------------------
    def name(self, table: str | TableName) -> TableName:
        if isinstance(table, TableName):
            return table
        try:
            return TableName.parse(table, catalog=self.catalog, schema=self.schema)
        except ValueError as exc:
            raise LakehouseError(str(exc)) from None

    def ddl(self, table: str | TableName) -> TableDDL | None:
        """The DDL of a workbench table, or None for data tables (raw sources, sheet snapshots)."""
        name = self.name(table)
        if (name.catalog, name.schema) != (self.catalog, self.schema):
            return None
        try:
            return load_ddl(name.table)
        except DDLError:
            return None

    # -- storage primitives ------------------------------------------------------------------------------------
    @abstractmethod
    def exists(self, table: str | TableName) -> bool: ...

    @abstractmethod
    def version(self, table: str | TableName) -> int | None:
        """Current table version (commit number), None if the table does not exist."""

    @abstractmethod
    def row_count(self, table: str | TableName) -> int: ...

    @abstractmethod
    def _read(self, spark: SparkSession, name: TableName, version: int | None) -> DataFrame: ...

    @abstractmethod
    def _write(self, name: TableName, df: DataFrame, mode: str, required: Sequence[str]) -> int:
        """Commit `df`; nothing is committed when a `required` column holds nulls (LakehouseError naming them)."""

    def write_batches(
        self,
        table: str | TableName,
        schema: pa.Schema,
        batches: Callable[[], Iterator[pa.RecordBatch]],
        mode: str = "overwrite",
        keep_unmatched: tuple[str, str] | None = None,
    ) -> int:
        """Stream Arrow batches (data made outside Spark, e.g. by the generator) into a table in one commit.

        `keep_unmatched=(column, regex)` with an overwrite keeps the table's rows whose `column` does not match
        `regex` (rows another writer put there) next to the new batches, in the same commit."""
        if keep_unmatched is not None:
            validate_identifier(keep_unmatched[0], what="column")
        return self._write_batches(self.name(table), schema, batches, _checked_mode(mode), keep_unmatched)

    @abstractmethod
    def _write_batches(
        self,
        name: TableName,
        schema: pa.Schema,
        batches: Callable[[], Iterator[pa.RecordBatch]],
        mode: str,
        keep_unmatched: tuple[str, str] | None = None,
    ) -> int: ...

    @abstractmethod
    def drop(self, table: str | TableName) -> None: ...

    # -- small operational tables (endpoint events, feedback, alerts), without Spark ---------------------------
    @abstractmethod
    def records(
        self,
        table: str | TableName,
        where: Mapping[str, object] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Rows of a table as dicts, filtered on `where` (column -> value, or a list/tuple/set of values: any of
        them), at most `limit` of them in no particular order; [] when the table does not exist."""

    @abstractmethod
    def append_records(self, table: str | TableName, records: Sequence[Mapping[str, object]]) -> int:
        """Append rows (dicts; missing columns are null) in one atomic commit; returns the new version."""

    @abstractmethod
    def upsert_records(
        self, table: str | TableName, records: Sequence[Mapping[str, object]], keys: Sequence[str]
    ) -> int:
        """Replace the rows whose `keys` match a record, add the others, in one atomic commit (idempotent);
        returns the new version. Creates the table from its DDL when it does not exist."""

    @abstractmethod
    def replace_records(
        self, table: str | TableName, records: Sequence[Mapping[str, object]], where: Mapping[str, object]
    ) -> int:
        """Replace every row matching `where` (column -> value) with `records` in one atomic commit (idempotent);
        returns the new version. Creates the table from its DDL when it does not exist."""

    @abstractmethod
    def update_records(self, table: str | TableName, where: Mapping[str, object], values: Mapping[str, object]) -> int:
        """Set `values` on the rows matching `where` in one atomic commit; returns the number of rows updated."""

    @abstractmethod
    def max_value(self, table: str | TableName, column: str) -> object | None:
        """The largest value of a column (from statistics where the format keeps them); None when empty."""

    @abstractmethod
    def locked(self, table: str | TableName) -> AbstractContextManager:
        """Serialize read-then-write sequences on one table across threads and processes."""

    @abstractmethod
    def volume_path(self, *parts: str) -> str:
        """A folder for files that belong with the tables (images, exports)."""

    @abstractmethod
    def cli_env(self) -> dict[str, str]:
        """The environment variables that point the `ontos` CLI at these tables (for commands written into
        reproducibility packs and messages)."""

    def record_ddl(self, name: TableName, records: Sequence[Mapping[str, object]], verb: str = "append to") -> TableDDL:
        """The DDL `records` are appended under, after checking their columns and required values."""
        ddl = self.ddl(name)
        if ddl is None:
            raise LakehouseError(f"{verb} {name}: only workbench tables (with DDL in schemas/) take records")
        unknown = sorted({k for r in records for k in r} - set(ddl.column_names))
        if unknown:
            raise LakehouseError(
                f"{verb} {name}: unknown column(s) {', '.join(unknown)}; the table has {', '.join(ddl.column_names)}"
            )
        for i, r in enumerate(records):
            missing = [c for c in ddl.required if r.get(c) is None]
            if missing:
                raise LakehouseError(f"{verb} {name}: row {i} has no value for required column(s) {', '.join(missing)}")
        return ddl

    def record_table(self, name: TableName, records: Sequence[Mapping[str, object]]) -> pa.Table:
        """`records` as an Arrow table with the DDL's schema (after `record_ddl`'s checks)."""
        schema = self.record_ddl(name, records, verb="write to").arrow_schema()
        columns = {}
        for field in schema:
            try:
                columns[field.name] = pa.array([r.get(field.name) for r in records], type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise LakehouseError(f"write to {name}: column {field.name!r} expects {field.type}: {exc}") from None
        return pa.Table.from_pydict(columns, schema=schema)

    # -- the interface the stages use --------------------------------------------------------------------------
    def read(self, spark: SparkSession, table: str | TableName, version: int | None = None) -> DataFrame:
        """The table (at `version`) as a Spark DataFrame; an empty frame for a workbench table not written yet."""
        name = self.name(table)
        if not self.exists(name):
            ddl = self.ddl(name)
            if ddl is not None and version is None:
                return spark.createDataFrame([], ddl.spark_schema())
            raise LakehouseError(f"table {name} does not exist; materialize the asset that writes it first")
        return self._read(spark, name, version)

    def write(self, table: str | TableName, df: DataFrame, mode: str = "overwrite") -> int:
        """Write `df` in one atomic commit; returns the new table version. Workbench tables must fit their DDL."""
        mode, name = _checked_mode(mode), self.name(table)
        df, required = self._conformed(name, df)
        return self._write(name, df, mode, required)

    def _conformed(self, name: TableName, df: DataFrame) -> tuple[DataFrame, Sequence[str]]:
        """`df` fitted to the table's DDL (workbench tables) and the NOT NULL columns to check before committing."""
        ddl = self.ddl(name)
        return (df, ()) if ddl is None else (conform(df, ddl, str(name)), ddl.required)

    def append(self, table: str | TableName, df: DataFrame) -> tuple[int | None, int]:
        """Append `df` in one atomic commit, none when it has no rows; returns (table version, rows appended)."""
        rows = df.count()
        return (self.write(table, df, mode="append") if rows else self.version(table)), rows

    def upsert(self, spark: SparkSession, table: str | TableName, df: DataFrame, keys: Sequence[str]) -> int:
        """Replace rows whose `keys` match, add the others: idempotent (re-running gives the same rows)."""
        name = self.name(table)
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise LakehouseError(f"upsert into {name}: key columns {missing} are not in the data")
        with self.locked(name):  # read-modify-write: runs of other use cases must not lose each other's rows
            if not self.exists(name):
                return self.write(name, df)
            return self._merge(spark, name, self._aligned(name, df), keys)

    def replace(self, spark: SparkSession, table: str | TableName, df: DataFrame, where: Mapping[str, object]) -> int:
        """Replace every row matching `where` (column -> value) with `df` in one commit (idempotent)."""
        name = self.name(table)
        with self.locked(name):  # read-modify-write, as in `upsert`
            if not self.exists(name):
                return self.write(name, df)
            return self._replace_rows(spark, name, self._aligned(name, df), where)

    def _merge(self, spark: SparkSession, name: TableName, df: DataFrame, keys: Sequence[str]) -> int:
        """Commit `df` into the existing table by `keys`: here by rewriting it whole (one overwrite commit)."""
        current = self._read(spark, name, None)
        kept = current.join(df.select(*keys).distinct(), on=list(keys), how="left_anti")
        return self.write(name, kept.unionByName(df.select(*current.columns)), mode="overwrite")

    def _replace_rows(self, spark: SparkSession, name: TableName, df: DataFrame, where: Mapping[str, object]) -> int:
        """Commit `df` in place of the rows matching `where`: here by rewriting the table whole."""
        from pyspark.sql import functions as F

        current = self._read(spark, name, None)
        match = F.lit(True)
        for column, value in where.items():
            match = match & (F.col(column) == F.lit(value))
        return self.write(name, current.filter(~match).unionByName(df.select(*current.columns)), mode="overwrite")

    def _aligned(self, name: TableName, df: DataFrame) -> DataFrame:
        ddl = self.ddl(name)
        return conform(df, ddl, str(name)) if ddl is not None else df

    def ensure(self, table: str | TableName) -> None:
        """Create an empty workbench table from its DDL if it does not exist yet."""
        name = self.name(table)
        ddl = self.ddl(name)
        if ddl is None:
            raise LakehouseError(f"table {name} has no DDL in schemas/; only workbench tables can be created empty")
        if not self.exists(name):
            self.write_batches(name, ddl.arrow_schema(), lambda: iter(()), mode="overwrite")


def _checked_mode(mode: str) -> str:
    if mode not in WRITE_MODES:
        raise LakehouseError(f"write mode {mode!r} is not one of {', '.join(WRITE_MODES)}")
    return mode


def conform(df: DataFrame, ddl: TableDDL, table: str) -> DataFrame:
    """Select the DDL's columns in order with its types; unknown or missing columns are errors."""
    from pyspark.sql import functions as F

    unknown = [c for c in df.columns if c not in ddl.column_names]
    if unknown:
        raise LakehouseError(
            f"{table}: columns {unknown} are not in its DDL (schemas/{ddl.name}.sql); expected {ddl.column_names}"
        )
    missing = [c for c in ddl.required if c not in df.columns]
    if missing:
        raise LakehouseError(f"{table}: required columns {missing} are missing (NOT NULL in schemas/{ddl.name}.sql)")
    schema = ddl.spark_schema()
    return df.select(
        *[(F.col(f.name) if f.name in df.columns else F.lit(None)).cast(f.dataType).alias(f.name) for f in schema]
    )


def check_required(df: DataFrame, required: Sequence[str], table: str) -> None:
    """Fail (naming table and columns) if a NOT NULL column holds nulls; one aggregate pass over `df`."""
    if not required:
        return
    from pyspark.sql import functions as F

    counts = df.agg(*[F.sum(F.col(c).isNull().cast("long")).alias(c) for c in required]).first()
    raise_on_nulls({c: counts[c] for c in required}, table)


def raise_on_nulls(nulls: Mapping[str, int], table: str) -> None:
    bad = {c: n for c, n in nulls.items() if n}
    if bad:
        raise LakehouseError(f"{table}: NOT NULL columns hold nulls ({bad}); nothing was written")


class LocalLakehouse(Lakehouse):
    """Delta tables on local disk: `<root>/<catalog>/<schema>/<table>`."""

    def __init__(
        self, root: Path | str, catalog: str = "ontos", schema: str = "workbench", files_root: Path | str | None = None
    ):
        super().__init__(catalog, schema)
        self.root = Path(root)
        self.files_root = Path(files_root) if files_root else self.root.parent / "files"

    @classmethod
    def under(cls, home: Path | str, catalog: str = "ontos", schema: str = "workbench") -> LocalLakehouse:
        """The lakehouse of an ONTOS_HOME: tables in `<home>/tables`, files in `<home>/files`."""
        return cls(Path(home) / "tables", catalog, schema, files_root=Path(home) / "files")

    def path(self, table: str | TableName) -> Path:
        name = self.name(table)
        return self.root / name.catalog / name.schema / name.table

    def _table(self, name: TableName, version: int | None = None) -> DeltaTable | None:
        try:
            return DeltaTable(str(self.path(name)), version=version)
        except TableNotFoundError:
            return None

    def exists(self, table: str | TableName) -> bool:
        return (self.path(table) / "_delta_log").is_dir() and self._table(self.name(table)) is not None

    def version(self, table: str | TableName) -> int | None:
        dt = self._table(self.name(table))
        return None if dt is None else dt.version()

    def row_count(self, table: str | TableName) -> int:
        name = self.name(table)
        dt = self._table(name)
        if dt is None:
            raise LakehouseError(f"table {name} does not exist")
        actions = pa.table(dt.get_add_actions(flatten=True))
        return int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0

    def _read(self, spark: SparkSession, name: TableName, version: int | None) -> DataFrame:
        dt = self._table(name, version)
        if dt is None:
            raise LakehouseError(f"table {name} has no version {version}")
        from pyspark.sql.pandas.types import from_arrow_schema

        ddl = self.ddl(name)
        schema = ddl.spark_schema() if ddl else from_arrow_schema(pa.schema(dt.schema().to_arrow()))
        files = dt.file_uris()  # only the live files of this version (a plain folder read would see removed ones)
        if not files:
            return spark.createDataFrame([], schema)
        return spark.read.schema(schema).parquet(*files)

    def append(self, table: str | TableName, df: DataFrame) -> tuple[int | None, int]:
        """One Spark job: the rows are counted from the written files' footers, not by a second pass."""
        name = self.name(table)
        df, required = self._conformed(name, df)
        return self._commit(name, df, "append", required)

    def _write(self, name: TableName, df: DataFrame, mode: str, required: Sequence[str]) -> int:
        return self._commit(name, df, mode, required)[0]  # type: ignore[return-value]

    def _commit(self, name: TableName, df: DataFrame, mode: str, required: Sequence[str]) -> tuple[int | None, int]:
        """Spark writes the files, their footers are checked (NOT NULL columns, row counts: no second Spark pass),
        delta-rs commits them; returns (version, rows written). Appending no rows commits nothing."""
        from pyspark.sql.pandas.types import to_arrow_schema

        path = self.path(name)
        commit_dir = f"c-{uuid.uuid4().hex}"
        target = path / commit_dir
        try:
            df.write.mode("error").parquet(str(target))
            files = [target / f for f in sorted(os.listdir(target)) if f.endswith(".parquet") and not f.startswith(".")]
            raise_on_nulls(_null_counts(files, required), str(name))
            adds = [a for a in (_add_action(f, f"{commit_dir}/{f.name}") for f in files) if a is not None]
            rows = sum(json.loads(a.stats)["numRecords"] for a in adds)
            dt = self._table(name)
            if dt is not None and mode == "append" and not adds:
                shutil.rmtree(target, ignore_errors=True)
                return dt.version(), 0
            schema = Schema.from_arrow(_nullable(to_arrow_schema(df.schema, timezone="UTC")))
            if dt is None:
                create_table_with_add_actions(str(path), schema, adds, mode="error")
            else:
                dt.create_write_transaction(adds, mode=mode, schema=schema)
        except Exception:
            shutil.rmtree(target, ignore_errors=True)  # uncommitted files: invisible, but do not leave them
            raise
        return self._committed(path), rows

    def _write_batches(
        self,
        name: TableName,
        schema: pa.Schema,
        batches: Callable[[], Iterator[pa.RecordBatch]],
        mode: str,
        keep_unmatched: tuple[str, str] | None = None,
    ) -> int:
        path = self.path(name)
        if keep_unmatched is not None and mode == "overwrite" and self.exists(name):
            column, regex = keep_unmatched
            current = read_delta(path)
            kept = current.filter(pc.invert(pc.match_substring_regex(current.column(column), regex)))
            kept = kept.select(schema.names).cast(schema)
            new_batches = batches

            def batches() -> Iterator[pa.RecordBatch]:
                yield from new_batches()
                yield from kept.to_batches()

        path.mkdir(parents=True, exist_ok=True)
        errors: list[BaseException] = []
        reader = pa.RecordBatchReader.from_batches(schema, _checked(batches(), schema, str(name), errors))
        try:
            write_deltalake(str(path), reader, mode=mode, schema_mode="overwrite" if mode == "overwrite" else None)
        except Exception:
            if errors:  # delta-rs wraps exceptions raised while producing batches: surface the original
                raise errors[0] from None
            raise
        return self._committed(path)

    def max_value(self, table: str | TableName, column: str) -> object | None:
        """The largest value of a column from the Delta file statistics (no data read); None when empty."""
        dt = self._table(self.name(table))
        if dt is None:
            return None
        actions = pa.table(dt.get_add_actions(flatten=True))
        stat = f"max.{column}"
        if stat not in actions.column_names:
            values = [r[column] for r in self.records(table, columns=[column]) if r[column] is not None]
            return max(values, default=None)
        return pc.max(actions.column(stat)).as_py()

    def drop(self, table: str | TableName) -> None:
        shutil.rmtree(self.path(table), ignore_errors=True)

    def records(
        self,
        table: str | TableName,
        where: Mapping[str, object] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        name = self.name(table)
        dt = self._table(name)
        if dt is None:
            return []
        where = dict(where or {})
        wanted = list(dict.fromkeys([*columns, *where])) if columns else None
        rows = python_rows(arrow_table(dt, wanted))
        for key, value in where.items():
            if isinstance(value, list | tuple | set | frozenset):
                allowed = set(value)
                rows = [r for r in rows if r[key] in allowed]
            else:
                rows = [r for r in rows if r[key] == value]
        if limit is not None:
            rows = rows[:limit]
        return [{c: r[c] for c in columns} for r in rows] if columns else rows

    def append_records(self, table: str | TableName, records: Sequence[Mapping[str, object]]) -> int:
        name = self.name(table)
        data = self.record_table(name, records)
        # created first when missing (never an overwrite: a concurrent first append would be lost), then a blind
        # append, retried when a concurrent commit changed the protocol or metadata
        # a column the DDL gained since the table was made is added to it (older rows read null)
        return self._transact(
            name, data.schema, lambda dt: write_deltalake(dt, data, mode="append", schema_mode="merge")
        )

    def upsert_records(
        self, table: str | TableName, records: Sequence[Mapping[str, object]], keys: Sequence[str]
    ) -> int:
        name = self.name(table)
        data = self.record_table(name, records)
        missing = [k for k in keys if k not in data.column_names]
        if missing or not keys:
            raise LakehouseError(f"upsert into {name}: key columns {missing or keys} are not in its DDL")
        on = " AND ".join(f"t.`{validate_identifier(k, what='key column')}` = s.`{k}`" for k in keys)

        def merge(dt: DeltaTable) -> None:
            (
                dt.merge(data, predicate=on, source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )

        return self._transact(name, data.schema, merge)

    def merge_arrow(self, table: str | TableName, data: pa.Table, keys: Sequence[str]) -> int:
        """Upsert an Arrow table into a data table by `keys` in one commit: matching rows are replaced, the others
        added. The columns must be the table's (LakehouseError naming the difference); returns the new version."""
        name = self.name(table)
        dt = self._table(name)
        if dt is None:
            return self.write_batches(name, data.schema, lambda: iter(data.to_batches()), mode="overwrite")
        have, want = dt.schema().to_arrow().names, data.schema.names
        if sorted(have) != sorted(want):
            raise LakehouseError(
                f"upsert into {name}: the table has the columns {', '.join(have)}, the new rows {', '.join(want)}; "
                "load the whole data with mode replace instead"
            )
        on = " AND ".join(f"t.`{validate_identifier(k, what='key column')}` = s.`{k}`" for k in keys)

        def merge(dt: DeltaTable) -> None:
            dt.merge(
                data, predicate=on, source_alias="s", target_alias="t"
            ).when_matched_update_all().when_not_matched_insert_all().execute()

        return self._transact(name, data.schema, merge)

    def replace_records(
        self, table: str | TableName, records: Sequence[Mapping[str, object]], where: Mapping[str, object]
    ) -> int:
        name = self.name(table)
        data = self.record_table(name, records)
        if not where:
            raise LakehouseError(f"replace in {name}: say which rows to replace (where column = value)")
        predicate = " AND ".join(
            f"`{validate_identifier(k, what='column')}` = {_sql_literal(v)}" for k, v in where.items()
        )
        outside = [i for i, r in enumerate(records) if any(r.get(k) != v for k, v in where.items())]
        if outside:
            raise LakehouseError(
                f"replace in {name}: record {outside[0]} does not match {dict(where)}; it would "
                "not be replaced by the next replace"
            )

        def overwrite(dt: DeltaTable) -> None:
            write_deltalake(dt, data, mode="overwrite", predicate=predicate)

        return self._transact(name, data.schema, overwrite)

    def _transact(self, name: TableName, schema: pa.Schema, commit: Callable[[DeltaTable], None]) -> int:
        """Run one delta-rs write transaction on the current version, again on a newer version when it conflicts
        with a concurrent commit (optimistic concurrency); creates the table from `schema` first if needed."""
        path = self.path(name)
        for attempt in range(COMMIT_ATTEMPTS):
            dt = self._table(name)
            if dt is None:
                path.mkdir(parents=True, exist_ok=True)
                try:
                    write_deltalake(str(path), schema.empty_table(), mode="error")
                except Exception:
                    if self._table(name) is None:  # not a concurrent writer's creation: a real failure
                        raise
                continue
            try:
                commit(dt)
            except CommitFailedError:
                time.sleep(min(0.5, 0.01 * 2**attempt) * random.random())
                continue
            return self._committed(path)
        raise LakehouseError(
            f"{name}: {COMMIT_ATTEMPTS} concurrent commits in a row won over this write; nothing was written, try again"
        )

    def _committed(self, path: Path) -> int:
        """The new version; every CHECKPOINT_EVERY commits a checkpoint keeps opening the table cheap."""
        dt = DeltaTable(str(path))
        version = dt.version()
        if version and version % CHECKPOINT_EVERY == 0:
            dt.create_checkpoint()
        return version

    def update_records(self, table: str | TableName, where: Mapping[str, object], values: Mapping[str, object]) -> int:
        name = self.name(table)
        dt = self._table(name)
        if dt is None:
            return 0
        predicate = " AND ".join(
            f"{validate_identifier(k, what='column')} = {_sql_literal(v)}" for k, v in where.items()
        )
        updates = {validate_identifier(k, what="column"): _sql_literal(v) for k, v in values.items()}
        metrics = dt.update(updates=updates, predicate=predicate or None)
        return int(metrics.get("num_updated_rows", 0))

    @contextmanager
    def locked(self, table: str | TableName) -> Iterator[None]:
        name = self.name(table)
        folder = self.root / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK:
            held = getattr(_HELD, "names", None) or set()
            if str(name) in held:  # re-entered by the thread that holds it
                yield
                return
            with open(folder / f"{name}.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                _HELD.names = held | {str(name)}
                try:
                    yield
                finally:
                    _HELD.names = held
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def volume_path(self, *parts: str) -> str:
        path = self.files_root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def cli_env(self) -> dict[str, str]:
        env = {"ONTOS_HOME": str(self.root.parent)}  # the tables are `<ONTOS_HOME>/tables`
        if (self.catalog, self.schema) != ("ontos", "workbench"):
            env.update(ONTOS_CATALOG=self.catalog, ONTOS_SCHEMA=self.schema)
        return env


def arrow_table(dt: DeltaTable, columns: Sequence[str] | None = None) -> pa.Table:
    """The live rows of a Delta table as Arrow, in the table's schema, read file by file.

    Not `DeltaTable.to_pyarrow_table()`: its dataset scanner leaves Arrow worker threads that abort the process at
    exit ("terminate called without an active exception", most runs on 2 cores). Small tables, no partitions: each
    live Parquet file is read whole (the columns asked for), files of older schemas get nulls for new columns.
    """
    schema = pa.schema(dt.schema().to_arrow())
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    parts = []
    for uri in dt.file_uris():
        with pq.ParquetFile(uri.removeprefix("file://")) as handle:
            present = set(handle.schema_arrow.names)
            part = handle.read(columns=[c for c in schema.names if c in present], use_threads=False)
        parts.append(
            pa.table(
                {
                    f.name: part[f.name].cast(f.type)
                    if f.name in part.column_names
                    else pa.nulls(part.num_rows, f.type)
                    for f in schema
                },
                schema=schema,
            )
        )
    return pa.concat_tables(parts) if parts else schema.empty_table()


_EPOCH = datetime(1970, 1, 1)
_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}


def python_rows(table: pa.Table) -> list[dict]:
    """Rows as dicts of Python values. Timestamps are converted here: pyarrow's own conversion imports pandas
    (a second of start-up for every command that reads a record table)."""
    columns = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            scale, tz = _UNITS[field.type.unit], UTC if field.type.tz else None
            epoch = _EPOCH.replace(tzinfo=tz)
            columns[field.name] = [
                None if v is None else epoch + timedelta(microseconds=int(v * scale))
                for v in column.cast(pa.int64()).to_pylist()
            ]
        else:
            columns[field.name] = column.to_pylist()
    names = table.column_names
    return (
        [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        if names
        else [{} for _ in range(table.num_rows)]
    )


def read_delta(path: Path | str, columns: Sequence[str] | None = None) -> pa.Table:
    """`arrow_table` of the Delta table at `path` (tests and benchmarks read tables this way too)."""
    return arrow_table(DeltaTable(str(path)), columns)


_THREAD_LOCK = threading.RLock()  # flock is per open file: threads of one process queue here first
_HELD = threading.local()


def _sql_literal(value: object) -> str:
    """A SQL literal for delta-rs predicates and updates (values are data, never identifiers)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"'{value.astimezone(UTC).isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _null_counts(files: Sequence[Path], columns: Sequence[str]) -> dict[str, int]:
    """Nulls per column in Parquet files, from the footers' statistics (read from the column where a footer has
    none, e.g. nested columns)."""
    counts = dict.fromkeys(columns, 0)
    for path in files:
        with pq.ParquetFile(path) as handle:
            meta, unknown = handle.metadata, []
            top = {meta.schema.column(i).path.split(".")[0]: i for i in range(meta.num_columns)}
            for column in columns:
                i = top.get(column)
                stats = (
                    [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
                    if i is not None and meta.schema.column(i).path == column
                    else [None]
                )
                if all(s is not None and s.has_null_count for s in stats):
                    counts[column] += sum(s.null_count for s in stats)
                else:
                    unknown.append(column)
            if unknown and meta.num_rows:
                table = handle.read(columns=unknown, use_threads=False)
                for column in unknown:
                    counts[column] += table.column(column).null_count
    return counts


def _add_action(full: Path, relative: str) -> AddAction | None:
    """The Delta add action for a data file Spark wrote; empty part files are deleted instead."""
    stat = full.stat()
    rows = pq.ParquetFile(full).metadata.num_rows
    if rows == 0:
        full.unlink()
        return None
    return AddAction(relative, stat.st_size, {}, int(stat.st_mtime * 1000), True, json.dumps({"numRecords": rows}))


def _nullable(schema: pa.Schema) -> pa.Schema:
    """Delta fields are nullable; NOT NULL rules are enforced by checks and DDL conformance, not storage."""
    return pa.schema([f.with_nullable(True) for f in schema])


def _checked(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, table: str, errors: list[BaseException]
) -> Iterator[pa.RecordBatch]:
    try:
        for batch in batches:
            if not batch.schema.equals(schema):
                raise LakehouseError(f"{table}: a batch has schema {batch.schema} but the table expects {schema}")
            yield batch
    except Exception as exc:
        errors.append(exc)
        raise
