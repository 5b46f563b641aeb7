"""Helpers shared by the asset modules."""

from pathlib import Path

from dagster import MetadataValue

from ontos_pipeline.lakehouse import Lakehouse
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.stages.sheet import SheetSnapshot, current_sheet


def published_sheet(spark, lakehouse: Lakehouse, spec: UseCaseSpec) -> SheetSnapshot:
    snapshot = current_sheet(lakehouse, spec.name)
    if snapshot is None:
        raise RuntimeError(f"no published sheet for {spec.name}; materialize the sheet asset first")
    return snapshot


def export_directory(lakehouse: Lakehouse, spec: UseCaseSpec, version: str) -> Path:
    return Path(lakehouse.volume_path("exports", spec.name)) / version


def md_counts(counts: dict) -> MetadataValue:
    return MetadataValue.md("| value | count |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in counts.items()))
