"""Shared fixtures: one warm local Spark engine for the whole test session (every test process and every process
a test starts connects to it), and throwaway ONTOS_HOME folders."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")

from ontos_pipeline.platform import engine
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.spark_session import disconnect, get_spark
from ontos_pipeline.settings import Settings, default_use_cases_dir

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


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4 (they share one engine; more only add memory)."""
    from ontos_pipeline.platform.threads import cpu_count

    return min(4, cpu_count())


def pytest_configure(config):
    """The first pytest process (the xdist controller, or the only one) picks the engine folder of this session;
    its workers and every subprocess a test starts inherit it through ONTOS_ENGINE_HOME."""
    if "ONTOS_ENGINE_HOME" not in os.environ:
        os.environ["ONTOS_ENGINE_HOME"] = tempfile.mkdtemp(prefix="ontos-test-engine-")
        config.ontos_engine_home = Path(os.environ["ONTOS_ENGINE_HOME"])


def pytest_unconfigure(config):
    folder = getattr(config, "ontos_engine_home", None)
    if folder is not None:  # the session that picked the folder stops the engine it started
        disconnect()
        engine.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def spark():
    return get_spark()


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


SERVE_TOKEN = "ontos_test-serve-token-0123456789abcdef"  # the tests' ONTOS_SERVE_TOKEN (every scope)
AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}


def make_settings(home: Path, use_cases_dir: Path) -> Settings:
    return Settings(
        target="local",
        home=home,
        catalog="ontos",
        schema="workbench",
        use_cases_dir=use_cases_dir,
        serve_token=SERVE_TOKEN,
    )
