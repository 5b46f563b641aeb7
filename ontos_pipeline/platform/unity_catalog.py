"""The lakehouse on Unity Catalog: Delta tables `<catalog>.<schema>.<table>` through the cluster's Spark session.

Runs inside Databricks steps. Every write is one Delta commit: `saveAsTable` for overwrite/append, `MERGE INTO`
for upserts, `replaceWhere` for replacing one use case's rows, so readers never see a half-written table and
re-running a step gives the same rows. Workbench tables are created from their DDL in `schemas/` on first use.
Reading `inference_log` reads the endpoints' AI Gateway payload tables (`<prefix>_payload`) mapped to our log's
columns, so monitoring runs the same code over Model Serving traffic.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.files import fuse_path
from ontos_pipeline.platform.identifiers import TableName, validate_identifier
from ontos_pipeline.platform.lakehouse import Lakehouse, LakehouseError, _sql_literal, check_required

INFERENCE_LOG = tables.INFERENCE_LOG


def _spark() -> SparkSession:
    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()


def _predicate(where: Mapping[str, object]) -> str:
    return " AND ".join(f"`{validate_identifier(k, what='column')}` = {_sql_literal(v)}" for k, v in where.items())


class UnityCatalogLakehouse(Lakehouse):
    """Unity Catalog tables through Spark SQL (Databricks runtime)."""

    readable_by_orchestrator = False

    def __init__(self, catalog: str, schema: str, volume: str, endpoints: Sequence[str] = ()):
        super().__init__(catalog, schema)
        self.volume, self.endpoints = volume, tuple(endpoints)

    def _sql(self, statement: str) -> DataFrame:
        return _spark().sql(statement)

    def exists(self, table: str | TableName) -> bool:
        name = self.name(table)
        if name.table == INFERENCE_LOG and self.endpoints:
            return bool(self._payload_tables())
        return _spark().catalog.tableExists(str(name))

    def version(self, table: str | TableName) -> int | None:
        name = self.name(table)
        if not self.exists(name):
            return None
        return int(self._sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"])

    def row_count(self, table: str | TableName) -> int:
        return self._read(_spark(), self.name(table), None).count()

    def _payload_tables(self) -> list[tuple[str, str]]:
        found = [(e, tables.payload_table(self.catalog, self.schema, e)) for e in self.endpoints]
        return [(e, t) for e, t in found if _spark().catalog.tableExists(t)]

    def _read(self, spark: SparkSession, name: TableName, version: int | None) -> DataFrame:
        if (
            name.table == INFERENCE_LOG
            and self.endpoints
            and (name.catalog, name.schema) == (self.catalog, self.schema)
        ):
            from ontos_pipeline.platform.inference_tables import payload_as_inference_log

            frames = [payload_as_inference_log(spark.table(t), endpoint) for endpoint, t in self._payload_tables()]
            if not frames:
                return spark.createDataFrame([], self.ddl(name).spark_schema())
            out = frames[0]
            for frame in frames[1:]:
                out = out.unionByName(frame)
            return out
        reader = spark.read if version is None else spark.read.option("versionAsOf", version)
        return reader.table(str(name))

    def ensure(self, table: str | TableName) -> None:
        """Create a workbench table with its DDL from `schemas/` (comments, NOT NULL, Delta) if it is missing.

        VARIANT columns are created as STRING holding JSON text, as on the local target: every stage reads and
        writes them as text (`from_json`, `to_json`), and a VARIANT column would return a different type."""
        name = self.name(table)
        ddl = self.ddl(name)
        if ddl is None:
            raise LakehouseError(f"table {name} has no DDL in schemas/; only workbench tables can be created empty")
        self._sql(re.sub(r"\bVARIANT\b", "STRING", ddl.render(name.catalog, name.schema)).strip().rstrip(";"))

    def _write(self, name: TableName, df: DataFrame, mode: str, required: Sequence[str]) -> int:
        check_required(df, required, str(name))  # one aggregate pass before the commit
        workbench = self.ddl(name) is not None
        if workbench:
            self.ensure(name)
        # data tables (sources, sheet snapshots) take a new schema on overwrite, as locally; workbench tables
        # keep their DDL
        overwrite_schema = "true" if mode == "overwrite" and not workbench else "false"
        writer = df.write.format("delta").mode(mode).option("overwriteSchema", overwrite_schema)
        if workbench and mode == "append":  # a column the DDL gained since the table was made is added (as locally)
            writer = writer.option("mergeSchema", "true")
        writer.saveAsTable(str(name))
        return self.version(name)  # type: ignore[return-value]

    def _write_batches(
        self,
        name: TableName,
        schema: pa.Schema,
        batches: Callable[[], Iterator[pa.RecordBatch]],
        mode: str,
        keep_unmatched: tuple[str, str] | None = None,
    ) -> int:
        data = pa.Table.from_batches(list(batches()), schema=schema)  # data made on the driver (the generator)
        df = _spark().createDataFrame(data.to_pandas(), schema=_spark_schema(schema))
        if keep_unmatched is not None and mode == "overwrite" and self.exists(name):
            column, regex = keep_unmatched  # the kept rows stay on the cluster: one overwrite of new + kept
            kept = _spark().table(str(name)).filter(~F.col(column).rlike(regex)).select(*schema.names)
            df = df.unionByName(kept.localCheckpoint())
        return self.write(name, df, mode)

    def _merge(self, spark: SparkSession, name: TableName, df: DataFrame, keys: Sequence[str]) -> int:
        """One `MERGE INTO` commit: rows with matching keys are replaced, the others inserted."""
        view = f"ontos_upsert_{uuid.uuid4().hex}"
        df.createOrReplaceTempView(view)
        try:
            on = " AND ".join(f"t.`{validate_identifier(k, what='column')}` <=> s.`{k}`" for k in keys)
            spark.sql(
                f"MERGE INTO {name} t USING {view} s ON {on} "
                "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
            )
        finally:
            spark.catalog.dropTempView(view)
        return self.version(name)  # type: ignore[return-value]

    def _replace_rows(self, spark: SparkSession, name: TableName, df: DataFrame, where: Mapping[str, object]) -> int:
        """One commit that deletes the rows matching `where` and writes `df` (Delta `replaceWhere`)."""
        df.write.format("delta").mode("overwrite").option("replaceWhere", _predicate(where)).saveAsTable(str(name))
        return self.version(name)  # type: ignore[return-value]

    def drop(self, table: str | TableName) -> None:
        self._sql(f"DROP TABLE IF EXISTS {self.name(table)}")

    def records(
        self,
        table: str | TableName,
        where: Mapping[str, object] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        name = self.name(table)
        if not self.exists(name):
            return []
        df = self._read(_spark(), name, None)
        for key, value in (where or {}).items():
            column = F.col(validate_identifier(key, what="column"))
            df = df.filter(
                column.isin(list(value))
                if isinstance(value, list | tuple | set | frozenset)
                else column == F.lit(value)
            )
        if columns:
            df = df.select(*[validate_identifier(c, what="column") for c in columns])
        if limit is not None:
            df = df.limit(limit)
        return [row.asDict() for row in df.collect()]  # small operational tables only, by contract

    def _record_frame(self, name: TableName, records: Sequence[Mapping[str, object]]) -> DataFrame:
        ddl = self.record_ddl(name, records, verb="write to")
        rows = [tuple(r.get(c) for c in ddl.column_names) for r in records]
        return _spark().createDataFrame(rows, ddl.spark_schema())

    def append_records(self, table: str | TableName, records: Sequence[Mapping[str, object]]) -> int:
        name = self.name(table)
        return self.write(name, self._record_frame(name, records), mode="append")

    def upsert_records(
        self, table: str | TableName, records: Sequence[Mapping[str, object]], keys: Sequence[str]
    ) -> int:
        """One `MERGE INTO` (Delta's optimistic concurrency on Databricks)."""
        name = self.name(table)
        return self.upsert(_spark(), name, self._record_frame(name, records), keys)

    def replace_records(
        self, table: str | TableName, records: Sequence[Mapping[str, object]], where: Mapping[str, object]
    ) -> int:
        """One `replaceWhere` overwrite."""
        name = self.name(table)
        return self.replace(_spark(), name, self._record_frame(name, records), where)

    def update_records(self, table: str | TableName, where: Mapping[str, object], values: Mapping[str, object]) -> int:
        name = self.name(table)
        if not self.exists(name):
            return 0
        sets = ", ".join(f"`{validate_identifier(k, what='column')}` = {_sql_literal(v)}" for k, v in values.items())
        result = self._sql(f"UPDATE {name} SET {sets}" + (f" WHERE {_predicate(where)}" if where else "")).first()
        return int(result["num_affected_rows"]) if result is not None else 0

    def max_value(self, table: str | TableName, column: str) -> object | None:
        name = self.name(table)
        if not self.exists(name):
            return None
        return self._read(_spark(), name, None).agg(F.max(validate_identifier(column, what="column"))).first()[0]

    def locked(self, table: str | TableName) -> AbstractContextManager:
        return nullcontext()  # Delta's optimistic concurrency on Databricks: conflicting commits fail, not merge

    def volume_path(self, *parts: str) -> str:
        path = fuse_path("/".join([self.volume, *parts]))
        os.makedirs(path, exist_ok=True)
        return path

    def cli_env(self) -> dict[str, str]:
        return {
            "ONTOS_TARGET": "databricks",
            "ONTOS_CATALOG": self.catalog,
            "ONTOS_SCHEMA": self.schema,
            "ONTOS_DATABRICKS_VOLUME": self.volume,
        }


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)
