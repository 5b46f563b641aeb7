"""The code a Databricks run needs: our packages as one zip, plus a tiny bootstrap script, both on the volume.

The bundle is named by the hash of its contents, so an unchanged checkout uploads nothing and concurrent runs of
different code never overwrite each other. The layout is the wheel's (`ontos_pipeline/schemas/*.sql` included);
use cases outside the package travel as `ontos_use_cases/`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

import ontos_pipeline
import synthetic_data
from ontos_pipeline.platform.ddl import SCHEMAS_DIR

# not installed on the cluster: the runtime brings its own Spark; the UI and the Pipes client stay on the orchestrator
CLUSTER_EXCLUDED = {"pyspark", "dagster-webserver", "dagster-databricks", "fastapi", "uvicorn"}
USE_CASES_FOLDER = "ontos_use_cases"

BOOTSTRAP = '''\
"""Ontos Pipeline step bootstrap (generated): unpack the code bundle, then run one step through Dagster Pipes."""
import os
import sys
import tempfile
import zipfile

FUSE_ROOT = os.environ.get("ONTOS_FUSE_ROOT", "")  # where /Volumes is mounted: "" on Databricks
BUNDLE = FUSE_ROOT + {bundle!r}
target = os.path.join(tempfile.gettempdir(), {folder!r})
if not os.path.isdir(target):
    partial = f"{{target}}.{{os.getpid()}}"
    with zipfile.ZipFile(BUNDLE) as archive:
        archive.extractall(partial)
    try:
        os.rename(partial, target)
    except OSError:  # another task on this node unpacked it first
        pass
sys.path.insert(0, target)
if os.path.isdir(os.path.join(target, {use_cases!r})):
    os.environ.setdefault("ONTOS_USE_CASES_DIR", os.path.join(target, {use_cases!r}))

from ontos_pipeline.databricks.entrypoint import main  # noqa: E402

main(bundle=BUNDLE)
'''


@dataclass(frozen=True)
class Bundle:
    digest: str
    data: bytes

    def path(self, volume: str) -> str:
        return f"{volume}/code/ontos-{self.digest}.zip"

    def bootstrap_path(self, volume: str) -> str:
        return f"{volume}/code/run-step-{self.digest}.py"

    def bootstrap(self, volume: str) -> str:
        return BOOTSTRAP.format(bundle=self.path(volume), folder=f"ontos-{self.digest}", use_cases=USE_CASES_FOLDER)


def _files(root: Path, prefix: str) -> list[tuple[str, Path]]:
    return sorted(
        (f"{prefix}/{p.relative_to(root).as_posix()}", p)
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def build_bundle(use_cases_dir: Path) -> Bundle:
    """Zip the packages (deterministic: sorted names, fixed timestamps) and hash the result."""
    package = Path(ontos_pipeline.__file__).resolve().parent
    data_package = Path(synthetic_data.__file__).resolve().parent
    entries = _files(package, "ontos_pipeline") + _files(data_package, "synthetic_data")
    if package.joinpath("schemas").resolve() != SCHEMAS_DIR.resolve():
        entries += _files(SCHEMAS_DIR, "ontos_pipeline/schemas")
    use_cases_dir = use_cases_dir.resolve()
    if not use_cases_dir.is_relative_to(data_package):
        entries += _files(use_cases_dir, USE_CASES_FOLDER)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest()[:16], data)


def cluster_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Our runtime requirements minus what the cluster must not (or need not) install, plus `extra`. Extras are
    dropped: `pandera[pyspark]` would install PySpark over the runtime's Spark. databricks-sdk stays: the
    runtime's own copy predates the Model Serving classes we use."""
    kept = []
    for text in metadata.requires("ontos-pipeline") or []:
        requirement = Requirement(text)
        if requirement.marker is None and requirement.name.lower() not in CLUSTER_EXCLUDED:
            kept.append(f"{requirement.name}{requirement.specifier}")
    return [*kept, *extra]
