"""A Databricks runtime stand-in for the fake workspace's "cluster" processes: what a runtime gives a step that the
local engine does not, emulated over real local components, so that steps run there with the Databricks resource
set (`ONTOS_TARGET=databricks`).

- **Unity Catalog tables** `<catalog>.<schema>.<table>` for the runtime's Spark session (the shared local engine):
  a Delta store through delta-rs (a `LocalLakehouse` rooted at `<root>/uc`) holds them. The statements the
  Unity Catalog lakehouse sends are carried out on it: `CREATE TABLE IF NOT EXISTS` (the DDL of `schemas/`),
  `saveAsTable` overwrite/append and `replaceWhere`, reads (`versionAsOf` too), `MERGE INTO`, `UPDATE`, `DROP
  TABLE` and `DESCRIBE HISTORY`. Local Spark cannot run Delta's SQL, so each statement is parsed for what it must
  do, and every statement and table write is appended to `<root>/uc/statements.jsonl` for tests to check as text.
  A statement the fake does not know fails the step.
- **The workspace MLflow** (`databricks` tracking, `databricks-uc` registry and its `models:/` artifacts): MLflow's
  own store registries answer those URIs from a SQLite store with artifacts under `<root>/mlflow`.

`install(root)` patches pyspark's Spark Connect classes and MLflow's registries in this process; the cluster's
`sitecustomize` calls it when ONTOS_FAKE_RUNTIME names the root.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from pathlib import Path

ROOT_VARIABLE = "ONTOS_FAKE_RUNTIME"
STATEMENTS = "statements.jsonl"
_NAME = r"`?([A-Za-z_]\w*)`?\.`?([A-Za-z_]\w*)`?\.`?([A-Za-z_]\w*)`?"
_CREATE = re.compile(rf"^\s*CREATE TABLE IF NOT EXISTS {_NAME}\s*\(", re.I | re.S)
_HISTORY = re.compile(rf"^\s*DESCRIBE HISTORY {_NAME} LIMIT 1\s*$", re.I)
_MERGE = re.compile(
    rf"^\s*MERGE INTO {_NAME} t USING (\w+) s ON (.+?) WHEN MATCHED THEN UPDATE SET \* "
    r"WHEN NOT MATCHED THEN INSERT \*\s*$",
    re.I | re.S,
)
_UPDATE = re.compile(rf"^\s*UPDATE {_NAME} SET (.+?)(?: WHERE (.+))?\s*$", re.I | re.S)
_DROP = re.compile(rf"^\s*DROP TABLE IF EXISTS {_NAME}\s*$", re.I)
_KEY = re.compile(r"t\.`(\w+)` <=> s\.`\1`")
_ASSIGNMENT = re.compile(r"`(\w+)` = (NULL|true|false|-?\d+(?:\.\d+)?(?:e-?\d+)?|'(?:[^']|'')*')", re.I)


class UnknownStatement(RuntimeError):
    """The step sent SQL this fake Unity Catalog does not carry out."""


class FakeUnityCatalog:
    """Unity Catalog tables of one metastore, as a delta-rs store under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def lakehouse(self, catalog: str, schema: str):
        from ontos_pipeline.platform.lakehouse import LocalLakehouse

        return LocalLakehouse(self.root / "tables", catalog, schema, files_root=self.root / "files")

    def log(self, kind: str, text: str, **facts: object) -> None:
        with self._lock, (self.root / STATEMENTS).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, "text": text, **facts}, default=str) + "\n")

    def table(self, name: str):
        """(lakehouse, three-level name) of a Unity Catalog name, or None for any other name."""
        parts = [p.strip("`") for p in str(name).split(".")]
        if len(parts) != 3:
            return None
        return self.lakehouse(parts[0], parts[1]), ".".join(parts)

    # -- what the patched session methods do ----------------------------------------------------------------
    def sql(self, spark, statement: str):
        """The DataFrame a Unity Catalog statement returns, or None when it is not one (plain Spark runs it)."""
        if m := _CREATE.match(statement):
            self.log("sql", statement)
            lakehouse, name = self.table(".".join(m.groups()))
            lakehouse.ensure(name)
            return spark.createDataFrame([], "result string")
        if m := _HISTORY.match(statement):
            self.log("sql", statement)
            lakehouse, name = self.table(".".join(m.groups()))
            return spark.createDataFrame([(lakehouse.version(name),)], "version long")
        if m := _MERGE.match(statement):
            self.log("sql", statement)
            lakehouse, name = self.table(".".join(m.groups()[:3]))
            view, condition = m.group(4), m.group(5)
            keys = _KEY.findall(condition)
            if " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys) != condition.strip():
                raise UnknownStatement(f"MERGE condition {condition!r} is not a null-safe key match")
            lakehouse.upsert(spark, name, _ORIGINAL["table"](spark, view), keys)
            return spark.createDataFrame([], "result string")
        if m := _UPDATE.match(statement):
            self.log("sql", statement)
            lakehouse, name = self.table(".".join(m.groups()[:3]))
            values, where = _assignments(m.group(4), ", "), _assignments(m.group(5) or "", " AND ")
            return spark.createDataFrame([(lakehouse.update_records(name, where, values),)], "num_affected_rows long")
        if m := _DROP.match(statement):
            self.log("sql", statement)
            lakehouse, name = self.table(".".join(m.groups()))
            lakehouse.drop(name)
            return spark.createDataFrame([], "result string")
        if re.search(rf"\b{_NAME}\b", statement) and not statement.lstrip().upper().startswith("SELECT"):
            raise UnknownStatement(f"the fake Unity Catalog does not carry out: {statement[:300]}")
        return None

    def save_as_table(self, writer, name: str) -> bool:
        """Carry out a `saveAsTable` into a Unity Catalog table; False for another name."""
        found = self.table(name)
        if found is None:
            return False
        from pyspark.sql.connect.dataframe import DataFrame

        lakehouse, full = found
        spark, write = writer._spark, writer._write
        df, mode, options = DataFrame(writer._df, spark), (write.mode or "error").lower(), dict(write.options)
        self.log("write", f"saveAsTable {full}", mode=mode, format=write.source, options=options)
        if "replaceWhere" in options:
            lakehouse.replace(spark, full, df, _assignments(options["replaceWhere"], " AND "))
        elif mode in ("overwrite", "append"):
            lakehouse.write(full, df, mode)
        else:
            raise UnknownStatement(f"saveAsTable {full} with mode {mode!r}")
        return True

    def read(self, spark, name: str, options: dict):
        found = self.table(name)
        if found is None:
            return None
        lakehouse, full = found
        version = options.get("versionAsOf")
        return lakehouse.read(spark, full, version=None if version is None else int(version))


def _assignments(text: str, separator: str) -> dict[str, object]:
    """`\\`k\\` = literal` pairs joined by `separator` (the lakehouse's own predicate and SET syntax)."""
    if not text.strip():
        return {}
    pairs = [_ASSIGNMENT.fullmatch(part.strip()) for part in text.split(separator)]
    if not all(pairs):
        raise UnknownStatement(f"cannot read the assignments {text!r}")
    return {m.group(1): _literal(m.group(2)) for m in pairs}


def _literal(text: str) -> object:
    lowered = text.lower()
    if lowered == "null":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if text.startswith("'"):
        value = text[1:-1].replace("''", "'")
        try:  # the lakehouse sends times as UTC ISO strings; anything else stays text
            moment = datetime.fromisoformat(value) if re.match(r"^\d{4}-\d\d-\d\dT", value) else None
        except ValueError:
            moment = None
        return moment if moment is not None and moment.tzinfo is not None else value
    return float(text) if re.search(r"[.e]", lowered) else int(text)


_ORIGINAL: dict[str, object] = {}


def install(root: Path) -> FakeUnityCatalog:
    """Patch this process: Unity Catalog names on the Spark Connect session, Databricks URIs in MLflow."""
    from pyspark.sql.connect import readwriter
    from pyspark.sql.connect.catalog import Catalog
    from pyspark.sql.connect.session import SparkSession

    from ontos_pipeline.platform.spark_session import get_spark

    uc = FakeUnityCatalog(Path(root) / "uc")
    _ORIGINAL.update(
        sql=SparkSession.sql,
        table=SparkSession.table,
        read_table=readwriter.DataFrameReader.table,
        save=readwriter.DataFrameWriter.saveAsTable,
        exists=Catalog.tableExists,
    )

    def sql(self, sqlQuery, args=None, **kwargs):
        handled = uc.sql(self, sqlQuery)
        return handled if handled is not None else _ORIGINAL["sql"](self, sqlQuery, args, **kwargs)

    def table(self, tableName):
        found = uc.read(self, tableName, {})
        return found if found is not None else _ORIGINAL["table"](self, tableName)

    def read_table(self, tableName):
        found = uc.read(self._client, tableName, dict(self._options))
        return found if found is not None else _ORIGINAL["read_table"](self, tableName)

    def save_as_table(self, name, format=None, mode=None, partitionBy=None, **options):
        self.mode(mode).options(**options)
        if format is not None:
            self.format(format)
        if not uc.save_as_table(self, name):
            _ORIGINAL["save"](self, name, partitionBy=partitionBy)

    def table_exists(self, tableName, dbName=None):
        found = uc.table(tableName) if dbName is None else None
        if found is None:
            return _ORIGINAL["exists"](self, tableName, dbName)
        lakehouse, full = found
        return lakehouse.exists(full)

    SparkSession.sql, SparkSession.table = sql, table
    readwriter.DataFrameReader.table, readwriter.DataFrameWriter.saveAsTable = read_table, save_as_table
    Catalog.tableExists = table_exists
    get_spark()  # the runtime's session exists before any step asks for one, as on Databricks
    _install_mlflow(Path(root) / "mlflow")
    return uc


def _install_mlflow(root: Path) -> None:
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    stores: dict[str, object] = {}

    def tracking(store_uri=None, artifact_uri=None, **_):
        if "tracking" not in stores:
            stores["tracking"] = TrackingStore(uri, str(root / "artifacts"))
        return stores["tracking"]

    def registry(store_uri=None, tracking_uri=None, **_):
        if "registry" not in stores:
            stores["registry"] = RegistryStore(uri)
        return stores["registry"]

    tracking_utils._tracking_store_registry.register("databricks", tracking)
    registry_utils._get_store_registry().register("databricks-uc", registry)
    _artifact_repository_registry.register(
        "models",
        lambda artifact_uri, tracking_uri=None, registry_uri=None, **_: ModelsArtifactRepository(
            artifact_uri, tracking_uri=uri, registry_uri=uri
        ),
    )
