"""Rebuild the training data of a trained model from its reproducibility pack and prove it is byte-identical.

The pack names the Delta version of `qa_pairs` and the sheet snapshot the model was trained on; both are read as
they were (time travel), exported with the same code, and every file's SHA-256 is compared with the pack.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ontos_pipeline.generate.training_sheet import QA
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import load_use_case
from ontos_pipeline.train.export import ExportManifest, export_training_data
from ontos_pipeline.train.training_data import export_rows


@dataclass(frozen=True)
class Rebuild:
    manifest: ExportManifest
    expected: dict[str, str]
    actual: dict[str, str]

    @property
    def mismatches(self) -> dict[str, tuple[str | None, str | None]]:
        keys = sorted(set(self.expected) | set(self.actual))
        return {
            k: (self.expected.get(k), self.actual.get(k)) for k in keys if self.expected.get(k) != self.actual.get(k)
        }

    @property
    def identical(self) -> bool:
        return not self.mismatches


def rebuild_training_data(spark: SparkSession, lakehouse: Lakehouse, pack: dict, out: str | Path) -> Rebuild:
    """Export the pack's training-sheet snapshot into `out` and compare checksums with the pack."""
    data = pack["data"]
    with tempfile.TemporaryDirectory() as tmp:  # the spec as it was when the model was trained
        spec_path = Path(tmp) / pack["spec"]["file"]
        spec_path.write_text(pack["spec"]["text"], encoding="utf-8")
        spec = load_use_case(spec_path)
    qa = lakehouse.read(spark, QA, version=int(data["qa_pairs_table_version"])).filter(
        (F.col("training_sheet_id") == data["training_sheet_id"]) & (F.col("version") == data["training_sheet_version"])
    )
    manifest = export_training_data(spark, export_rows(spark, lakehouse, spec, qa, data["sheet_table"]), out)
    return Rebuild(manifest, dict(pack["export"]["sha256"]), manifest.checksums())
