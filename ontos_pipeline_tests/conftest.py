"""Shared fixtures: one real local Spark session per test process, and throwaway ONTOS_HOME folders."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")

from ontos_pipeline.lakehouse import LocalLakehouse
from ontos_pipeline.settings import Settings, default_use_cases_dir
from ontos_pipeline.spark_session import get_spark

DEMO_USE_CASES = default_use_cases_dir()

WIDGETS_SPEC = textwrap.dedent("""
    name: widgets
    sheet:
      primary: widgets
      sources:
        widgets:
          table: factory.widgets
          columns: {item_ref: string, size_mm: double, color: string, photo: string, notes: string, maker_id: string}
        makers:
          table: factory.makers
          columns: {maker_id: string, maker_name: string}
      joins:
        - {source: makers, left: widgets.maker_id, right: makers.maker_id, how: left}
      columns:
        - {name: item_ref, from: widgets.item_ref, type: string, category: metadata, nullable: false}
        - {name: size_mm, from: widgets.size_mm, type: double, category: numeric, range: [0, 100]}
        - {name: color, from: widgets.color, type: string, category: categorical, values: [red, blue]}
        - {name: photo, from: widgets.photo, type: string, category: image}
        - {name: notes, from: widgets.notes, type: string, category: text}
        - {name: maker, from: makers.maker_name, type: string, category: metadata}
    labels: {label_type: widget_ok, import_table: factory.widget_labels}
    template:
      name: widget_ok
      prompt: "Is the {{ color }} widget of {{ size_mm }} mm ok?"
      response_schema: {type: string, enum: ["ok", "not_ok"]}
""")


@pytest.fixture(scope="session")
def spark():
    return get_spark(shuffle_partitions=2, driver_memory="2g")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "ontos_home"
    path.mkdir()
    return path


@pytest.fixture
def lakehouse(home: Path) -> LocalLakehouse:
    return LocalLakehouse(home / "tables", "ontos", "workbench", files_root=home / "files")


@pytest.fixture
def widgets_dir(tmp_path: Path) -> Path:
    """A use-case folder with the hand-made `widgets` spec (no generator: the test writes its tables)."""
    folder = tmp_path / "use_cases"
    folder.mkdir()
    (folder / "widgets.yaml").write_text(WIDGETS_SPEC, encoding="utf-8")
    return folder


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A copy of the demo use-case folder, safe to edit."""
    folder = tmp_path / "demo_use_cases"
    shutil.copytree(DEMO_USE_CASES, folder)
    return folder


def make_settings(home: Path, use_cases_dir: Path) -> Settings:
    return Settings(target="local", home=home, catalog="ontos", schema="workbench", use_cases_dir=use_cases_dir)
