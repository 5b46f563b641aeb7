"""Source tables of a use case: generated for the synthetic demo, or checked when they come from elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec
from synthetic_data.generator import generate_tables


class SourcesError(ValueError):
    """A source table the spec reads is missing."""


@dataclass(frozen=True)
class SourceTable:
    name: str
    rows: int
    version: int
    role: str  # source | labels | drifted


def materialize_sources(
    lakehouse: Lakehouse, spec: UseCaseSpec, rows: int | None = None, seed: int | None = None
) -> list[SourceTable]:
    """Write the synthetic tables of a demo use case (deterministic), or report the existing source tables.

    Rows that landed in the primary table since it was generated (new production data, `land_batch`) are kept in
    the same commit: regenerating the demo data never loses them, nor the feedback given on them."""
    if spec.synthetic is None:
        return _existing(lakehouse, spec)
    syn = spec.synthetic
    n = rows or syn.rows
    tables = generate_tables(
        syn.generator,
        rows=n,
        drifted_rows=max(1, round(syn.drifted_rows * n / syn.rows)),
        seed=syn.seed if seed is None else seed,
        image_dir=Path(lakehouse.volume_path("images", spec.name)),
        files_root=Path(lakehouse.volume_path()),  # image cells relative to it: a moved home keeps its images
    )
    source_tables = {s.table for s in spec.sheet.sources.values()}
    out = []
    for table in tables:
        keep = (ITEM_KEY, table.generated_refs) if table.generated_refs is not None else None
        version = lakehouse.write_batches(
            table.name, table.schema, table.batches, mode="overwrite", keep_unmatched=keep
        )
        role = "source" if table.name in source_tables else "drifted" if table.name.endswith("_drifted") else "labels"
        out.append(SourceTable(str(lakehouse.name(table.name)), lakehouse.row_count(table.name), version, role))
    return out


def _existing(lakehouse: Lakehouse, spec: UseCaseSpec) -> list[SourceTable]:
    out = []
    for source in spec.sheet.sources.values():
        if not lakehouse.exists(source.table):
            raise SourcesError(
                f"{spec.path}: sheet.sources.{source.name}.table: table "
                f"{lakehouse.name(source.table)} does not exist; load it or fix the table name"
            )
        out.append(
            SourceTable(
                str(lakehouse.name(source.table)),
                lakehouse.row_count(source.table),
                lakehouse.version(source.table) or 0,
                "source",
            )
        )
    return out
