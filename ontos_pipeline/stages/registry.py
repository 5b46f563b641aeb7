"""Version registries (`sheets`, `templates`): publish one version, archive the others, keep first-seen facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, SparkSession

from ontos_pipeline.lakehouse import Lakehouse

KEPT = ("created_at", "dagster_run_id")  # facts of a version's first registration


def publish_version(spark: SparkSession, lakehouse: Lakehouse, table: str, row: Mapping[str, object],
                    keys: Sequence[str], scope: Column) -> bool:
    """Make `row` the published version among the rows matching `scope`; True if the version is new.

    Other published rows in scope are archived. A version registered before keeps its `created_at` and
    `dagster_run_id`; re-publishing the version that is already the only published one writes nothing.
    """
    lakehouse.ensure(table)
    ddl = lakehouse.ddl(table)
    rows = lakehouse.read(spark, table).filter(scope).collect()
    prior = next((r for r in rows if all(r[k] == row[k] for k in keys)), None)
    others = [r for r in rows if r is not prior and r["status"] == "published"]
    if prior is not None and prior["status"] == "published" and not others:
        return False
    new = {**row, "status": "published",
           **({k: prior[k] for k in KEPT if k in ddl.column_names} if prior is not None else {})}
    archived = [{**r.asDict(), "status": "archived"} for r in others]
    lakehouse.upsert(spark, table, spark.createDataFrame([new, *archived], ddl.spark_schema()), keys=list(keys))
    return prior is None
