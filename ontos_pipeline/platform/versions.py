"""Version registries (`sheets`, `templates`): publish one version, archive the others, keep first-seen facts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ontos_pipeline.platform.lakehouse import Lakehouse

KEPT = ("created_at", "dagster_run_id")  # facts of a version's first registration


def publish_version(
    lakehouse: Lakehouse,
    table: str,
    row: Mapping[str, object],
    keys: Sequence[str],
    scope: Callable[[Mapping[str, object]], bool],
) -> bool:
    """Make `row` the published version among the rows for which `scope(row)` holds; True if the version is new.

    Other published rows in scope are archived. A version registered before keeps its `created_at` and
    `dagster_run_id`; re-publishing the version that is already the only published one writes nothing. The
    registry is small: it is read and upserted with delta-rs, without Spark, under the table's lock (the decision
    depends on what was read).
    """
    with lakehouse.locked(table):
        rows = [r for r in lakehouse.records(table) if scope(r)]
        prior = next((r for r in rows if all(r[k] == row[k] for k in keys)), None)
        others = [r for r in rows if r is not prior and r["status"] == "published"]
        if prior is not None and prior["status"] == "published" and not others:
            return False
        columns = lakehouse.ddl(table).column_names
        new = {**row, "status": "published", **({k: prior[k] for k in KEPT if k in columns} if prior else {})}
        archived = [{**r, "status": "archived"} for r in others]
        lakehouse.upsert_records(table, [new, *archived], keys=list(keys))
    return prior is None


def latest_published(lakehouse: Lakehouse, table: str, where: Mapping[str, object]) -> dict | None:
    """The most recently created published row matching `where` (column -> value), or None."""
    rows = lakehouse.records(table, {**where, "status": "published"})
    return max(rows, key=lambda r: r["created_at"], default=None)
