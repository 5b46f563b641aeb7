"""The stored training sheets (`qa_pairs`) read without Spark: their version, and rows for people (review, CLI).

Building a training sheet is Spark work (`generate.training_sheet`); looking at one is a point query: delta-rs
reads only the columns asked for, so `ontos review list|show` answer without starting or connecting to Spark.
"""

from __future__ import annotations

from collections.abc import Sequence

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY

QA = tables.QA_PAIRS
REVIEWS = tables.LABEL_REVIEWS


def training_sheet_version(lakehouse: Lakehouse, training_sheet_id: str) -> str | None:
    """The current version of a training sheet (all its rows carry it), None before its first materialization."""
    rows = lakehouse.records(QA, {"training_sheet_id": training_sheet_id}, columns=["version"], limit=1)
    return rows[0]["version"] if rows else None


def training_sheet_rows(
    lakehouse: Lakehouse,
    training_sheet_id: str,
    *,
    status: str | None = None,
    items: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Rows of a training sheet ordered by item, optionally only those with `status` or among `items`; with a
    `limit`, the first items are chosen on the item column alone before the other columns are read."""
    where: dict[str, object] = {"training_sheet_id": training_sheet_id}
    if status:
        where["status"] = status
    if limit is not None and items is None:
        refs = sorted(r[ITEM_KEY] for r in lakehouse.records(QA, where, columns=[ITEM_KEY]))
        items = refs[:limit]
    if items is not None:
        if not items:
            return []
        where[ITEM_KEY] = list(items)
    wanted = list(dict.fromkeys([ITEM_KEY, *columns])) if columns else None
    return sorted(lakehouse.records(QA, where, columns=wanted), key=lambda r: r[ITEM_KEY])


def review_history(lakehouse: Lakehouse, training_sheet_id: str, item_ref: str) -> list[dict]:
    """Every review decision on one item of a training sheet, oldest first."""
    rows = lakehouse.records(REVIEWS, {"training_sheet_id": training_sheet_id, ITEM_KEY: item_ref})
    return sorted(rows, key=lambda r: r["created_at"])
