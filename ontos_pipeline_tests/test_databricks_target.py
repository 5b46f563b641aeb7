"""The Databricks target against a local fake workspace (`fake_workspace.py`) driven by the real databricks-sdk and
the real dagster-databricks Pipes client.

The fake runs each submitted task as a local process (its "cluster") with the Databricks resource set: Unity
Catalog tables, the workspace MLflow with the UC registry and Model Serving, the first two through the runtime
stand-in of `fake_runtime.py` (Delta SQL checked as text, carried out on a delta-rs store), the last against the fake
workspace's serving routes.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, Definitions, materialize
from dagster._serdes import serialize_value

from ontos_pipeline.databricks.compute import DatabricksCompute
from ontos_pipeline.definitions import build_definitions
from ontos_pipeline.pipeline import FULL_PIPELINE, IMPROVE, MONITOR
from ontos_pipeline.resources.targets import orchestrator_resources
from ontos_pipeline.settings import Settings, SettingsError
from ontos_pipeline_tests.conftest import DEMO_USE_CASES
from ontos_pipeline_tests.fake_runtime import STATEMENTS, FakeUnityCatalog
from ontos_pipeline_tests.fake_workspace import FakeWorkspace
from ontos_pipeline_tests.widgets import good_widgets, write_widgets

VOLUME = "/Volumes/ontos/workbench/ontos"
PLACEHOLDER_TOKEN = "dapi-placeholder-0123456789abcdef"


def databricks_settings(home: Path, use_cases: Path) -> Settings:
    return Settings(target="databricks", home=home, catalog="ontos", schema="workbench", use_cases_dir=use_cases)


def workspace_env(monkeypatch, host: str, token: str, **extra: str) -> None:
    for var in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", token)
    monkeypatch.setenv("DATABRICKS_AUTH_TYPE", "pat")
    monkeypatch.setenv("ONTOS_DATABRICKS_VOLUME", VOLUME)
    monkeypatch.setenv("ONTOS_DATABRICKS_POLL_SECONDS", "0.2")
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def failure_text(result) -> str:
    parts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            parts.append(error.message)
            error = error.cause
    return "\n".join(parts)


# -- loading ------------------------------------------------------------------------------------------------
def test_step_bodies_use_only_the_resource_contracts_every_target_implements(monkeypatch, home):
    """A step body runs with the local resources here and with the Databricks ones on a cluster. Bodies and checks
    annotate the abstract contracts of `resources.base` and use only what those declare (an attribute only one
    implementation has, such as the `lakehouse.home` that once broke `trained_model` on a cluster, fails here);
    both targets inject an implementation of every contract a step names."""
    import ast
    import inspect
    import textwrap
    import typing

    from ontos_pipeline.pipeline import STEPS
    from ontos_pipeline.resources import base
    from ontos_pipeline.resources.targets import data_plane_resources

    monkeypatch.setenv("ONTOS_DATABRICKS_VOLUME", VOLUME)
    targets = {
        "local": data_plane_resources(Settings("local", home, "ontos", "workbench", DEMO_USE_CASES)),
        "databricks": data_plane_resources(databricks_settings(home, DEMO_USE_CASES)),
    }
    contracts = {c for c in vars(base).values() if isinstance(c, type) and c.__module__ == base.__name__}

    def offers(contract: type, attribute: str) -> bool:
        return attribute in contract.model_fields or hasattr(contract, attribute)

    used, problems = set(), []
    for step in STEPS:
        for name, fn in [(step.key, step.body), *((f"{step.key}:{c.name}", c.body) for c in step.checks)]:
            hints = typing.get_type_hints(fn)
            params = {p: hints[p] for p in inspect.signature(fn).parameters if p in step.resources}
            for param, contract in params.items():
                if contract not in contracts:
                    problems.append(
                        f"{name}: {param} is annotated {contract.__name__}, not a contract of resources.base"
                    )
                    continue
                problems += [
                    f"{name}: {target} injects {type(res[param]).__name__} for {param}, which is not a "
                    f"{contract.__name__}"
                    for target, res in targets.items()
                    if not isinstance(res[param], contract)
                ]
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in params:
                    used.add((node.value.id, node.attr))
                    if not offers(params[node.value.id], node.attr):
                        problems.append(
                            f"{name}: {node.value.id}.{node.attr} is not part of {params[node.value.id].__name__}"
                        )
    assert ("lakehouse", "get") in used and ("mlflow_store", "get") in used  # the walk sees the bodies' resources
    assert problems == []
    # what the trained_model step used `lakehouse.home` for: the environment a reproducibility pack's command needs
    assert targets["local"]["lakehouse"].get().cli_env() == {"ONTOS_HOME": str(home)}
    assert targets["databricks"]["lakehouse"].get().cli_env() == {
        "ONTOS_TARGET": "databricks",
        "ONTOS_CATALOG": "ontos",
        "ONTOS_SCHEMA": "workbench",
        "ONTOS_DATABRICKS_VOLUME": VOLUME,
    }


def test_definitions_load_under_both_targets_without_network(monkeypatch, home):
    workspace_env(monkeypatch, "https://placeholder.cloud.databricks.com", PLACEHOLDER_TOKEN)
    local = build_definitions(Settings("local", home, "ontos", "workbench", DEMO_USE_CASES))
    remote = build_definitions(databricks_settings(home, DEMO_USE_CASES))
    for defs in (local, remote):
        Definitions.validate_loadable(defs)
        assert defs.resolve_job_def(FULL_PIPELINE) is not None
    assert (
        local.get_repository_def().asset_graph.get_all_asset_keys()
        == remote.get_repository_def().asset_graph.get_all_asset_keys()
    )
    compute = remote.resources["compute"]
    assert isinstance(compute, DatabricksCompute) and compute.volume == VOLUME
    resource_config = json.dumps(
        {k: r.model_dump() for k, r in remote.resources.items() if hasattr(r, "model_dump")}, default=str
    )
    assert PLACEHOLDER_TOKEN not in resource_config and "placeholder.cloud" not in resource_config
    # the feedback sensor reads local tables only; the notification sensors read the instance and their outbox
    assert [s.name for s in remote.sensors] == ["run_failure_notification_sensor", "notification_retry_sensor"]
    assert remote.resources["notifier"].outbox_dir == str(home / "notifications")  # the orchestrator's own


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set DATABRICKS_HOST"),
        ({"DATABRICKS_HOST": "https://x.cloud.databricks.com"}, "set DATABRICKS_TOKEN"),
        ({"DATABRICKS_HOST": "x.cloud.databricks.com", "DATABRICKS_TOKEN": "t"}, "DATABRICKS_HOST must be"),
        ({"DATABRICKS_CONFIG_PROFILE": "dev", "ONTOS_DATABRICKS_VOLUME": "/tmp/v"}, "ONTOS_DATABRICKS_VOLUME='/tmp/v'"),
        ({"DATABRICKS_CONFIG_PROFILE": "dev", "ONTOS_DATABRICKS_COMPUTE": "gpu"}, "ONTOS_DATABRICKS_COMPUTE='gpu'"),
        ({"DATABRICKS_CONFIG_PROFILE": "dev", "ONTOS_DATABRICKS_WORKERS": "none"}, "ONTOS_DATABRICKS_WORKERS"),
    ],
)
def test_bad_databricks_environment_fails_at_load_naming_the_variable(monkeypatch, home, env, message):
    for var in (
        "DATABRICKS_HOST",
        "DATABRICKS_TOKEN",
        "DATABRICKS_CONFIG_PROFILE",
        "DATABRICKS_CLIENT_ID",
        "DATABRICKS_CLIENT_SECRET",
        "ONTOS_DATABRICKS_VOLUME",
        "ONTOS_DATABRICKS_COMPUTE",
        "ONTOS_DATABRICKS_WORKERS",
    ):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("[", r"\[")):
        orchestrator_resources(databricks_settings(home, DEMO_USE_CASES))


# -- running steps through Pipes ----------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def runtime_env(tmp_path: Path) -> dict[str, str]:
    """The fake cluster's environment: the Databricks runtime stand-in (Unity Catalog tables and the workspace
    MLflow, `fake_runtime.py`) under its own root, and no orchestrator-only packages, so the entry point must do
    without them. The runtime's own credentials for the workspace are added once its URL is known (`cluster`)."""
    blocked = tmp_path / "not_on_the_cluster"
    for package in ("dagster_databricks", "dagster_webserver"):
        (blocked / package).mkdir(parents=True, exist_ok=True)
        (blocked / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed on clusters')")
    site = Path(__file__).parent / "fake_runtime_site"
    return {
        "ONTOS_FAKE_RUNTIME": str(tmp_path / "runtime"),
        "ONTOS_HOME": str(tmp_path / "not_used_on_clusters"),
        "PYTHONPATH": os.pathsep.join([str(blocked), str(site), str(ROOT)]),
    }


def runtime_catalog(tmp_path: Path) -> FakeUnityCatalog:
    return FakeUnityCatalog(tmp_path / "runtime" / "uc")


@contextmanager
def fake_cluster(tmp_path: Path):
    """A fake workspace whose runs execute on the Databricks runtime stand-in, authenticated to the workspace."""
    with FakeWorkspace(tmp_path / "workspace", cluster_env=runtime_env(tmp_path)) as ws:
        ws.cluster_env.update(DATABRICKS_HOST=ws.url, DATABRICKS_TOKEN=ws.token, DATABRICKS_AUTH_TYPE="pat")
        ws.catalog = runtime_catalog(tmp_path)
        yield ws


def statements(ws: FakeWorkspace) -> list[dict]:
    path = ws.catalog.root / STATEMENTS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def cluster(tmp_path, spark, widgets_dir, home):
    """A fake workspace whose runs see the widgets source tables in Unity Catalog (`ontos.factory.*`)."""
    write_widgets(spark, runtime_catalog(tmp_path).lakehouse("ontos", "workbench"), good_widgets(home))
    with fake_cluster(tmp_path) as ws:
        ws.cluster_lakehouse = ws.catalog.lakehouse("ontos", "workbench")
        yield ws


def run_assets(settings: Settings, selection: list[str], instance=None):
    defs = build_definitions(settings)
    return materialize(
        list(defs.assets),
        selection=selection,
        partition_key="widgets",
        resources=orchestrator_resources(settings),
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_sheet_and_its_checks_run_as_one_databricks_run(monkeypatch, cluster, home, widgets_dir, spark):
    workspace_env(monkeypatch, cluster.url, cluster.token)
    instance = DagsterInstance.ephemeral()
    result = run_assets(databricks_settings(home, widgets_dir), ["sheet"], instance)
    assert result.success, failure_text(result)

    sheet = result.asset_materializations_for_node("sheet")[0].metadata
    assert sheet["dagster/row_count"].value == 4
    assert sheet["Databricks Job Run URL"].value.startswith(f"{cluster.url}/#job/")
    assert sheet["dagster/column_schema"].schema.columns[0].name == "item_ref"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"frame_rules": True, "item_ref_unique": True, "images_present": True, "phi_scan": True}
    published = cluster.cluster_lakehouse.records("sheets", {"use_case": "widgets"})
    assert [r["version"] for r in published] == [sheet["version"].value]  # written by the "cluster"
    # through the Unity Catalog lakehouse: the snapshot replaces its table's schema, the registry keeps its DDL
    done = statements(cluster)
    snapshot = sheet["snapshot_table"].value
    assert snapshot.startswith("ontos.workbench.sheet_widgets_")
    assert {
        "kind": "write",
        "text": f"saveAsTable {snapshot}",
        "mode": "overwrite",
        "format": "delta",
        "options": {"overwriteSchema": "true"},
    } in done
    create = next(d["text"] for d in done if d["text"].startswith("CREATE TABLE IF NOT EXISTS ontos.workbench.sheets"))
    assert "sheet_id STRING NOT NULL COMMENT" in create and "USING DELTA" in create and "VARIANT" not in create
    assert {d["text"] for d in done if d["kind"] == "write"} == {
        f"saveAsTable {snapshot}",
        "saveAsTable ontos.workbench.sheets",
    }

    submits = cluster.calls("runs/submit", "POST")
    assert [s.body["run_name"].split(" [")[0] for s in submits] == ["ontos sheet"]  # its checks ran in the same run
    task = submits[0].body["tasks"][0]
    assert task["task_key"] == "sheet"
    assert task["new_cluster"]["data_security_mode"] == "SINGLE_USER"
    assert task["new_cluster"]["spark_env_vars"]["ONTOS_TARGET"] == "databricks"
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(task["new_cluster"]["spark_env_vars"])
    assert task["spark_python_task"]["python_file"].startswith(f"{VOLUME}/code/run-step-")
    packages = [lib["pypi"]["package"] for lib in task["libraries"]]
    assert "dagster==1.13.27" in packages and not any(p.startswith("pyspark") for p in packages)
    assert submits[0].body["timeout_seconds"] == 3600

    # in order: upload the code (content-named), write the Pipes context, submit, poll, read messages, clean up
    flow = [(c.method, c.path) for c in cluster.requests]
    at = {
        step: next(i for i, (m, p) in enumerate(flow) if m == method and p.endswith(suffix))
        for step, method, suffix in [
            ("code", "PUT", ".zip"),
            ("bootstrap", "PUT", ".py"),
            ("context", "POST", "/dbfs/put"),
            ("submit", "POST", "/runs/submit"),
            ("poll", "GET", "/runs/get"),
            ("messages", "GET", "/dbfs/read"),
            ("cleanup", "POST", "/dbfs/delete"),
        ]
    }
    assert list(at) == sorted(at, key=at.get)
    assert len(cluster.calls("dbfs/delete")) == 2  # the context and the message folders

    again = run_assets(databricks_settings(home, widgets_dir), ["sheet"], instance)
    assert again.success and len(cluster.calls("runs/submit")) == 2
    assert len(cluster.calls(r"/fs/files/.*\.(zip|py)$", "PUT")) == 2  # unchanged code is not uploaded again

    # new source rows: a new sheet version, published with one MERGE that also archives the old one
    write_widgets(spark, cluster.cluster_lakehouse, good_widgets(home)[:3])
    third = run_assets(databricks_settings(home, widgets_dir), ["sheet"], instance)
    assert third.success, failure_text(third)
    merges = [d["text"] for d in statements(cluster) if d["text"].startswith("MERGE")]
    assert len(merges) == 1 and re.fullmatch(
        r"MERGE INTO ontos\.workbench\.sheets t USING ontos_upsert_\w+ s ON t\.`(\w+)` <=> s\.`\1`"
        r"( AND t\.`(\w+)` <=> s\.`\3`)* WHEN MATCHED THEN UPDATE SET \* WHEN NOT MATCHED THEN INSERT \*",
        merges[0],
    )
    new = third.asset_materializations_for_node("sheet")[0].metadata["version"].value
    assert {
        r["version"]: r["status"] for r in cluster.cluster_lakehouse.records("sheets", {"use_case": "widgets"})
    } == {sheet["version"].value: "archived", new: "published"}

    # no secret anywhere the scan looks: requests (bodies), events, run config, run logs, files, the bundle
    token = cluster.token
    assert all(token not in json.dumps(c.body, default=str) for c in cluster.requests)
    run = instance.get_runs()[0]
    assert token not in serialize_value(run)
    assert all(token not in serialize_value(e) for e in instance.all_logs(run.run_id))
    for path in [*cluster.root.rglob("*"), *(home.rglob("*"))]:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_databricks_errors_fail_the_asset_with_a_clear_reason(monkeypatch, cluster, home, widgets_dir):
    settings = databricks_settings(home, widgets_dir)
    workspace_env(monkeypatch, cluster.url, cluster.token)

    cluster.fail(
        "POST", "runs/submit", 400, error_code="INVALID_PARAMETER_VALUE", message="node type i3 is not supported"
    )
    text = failure_text(run_assets(settings, ["sources"]))
    assert "Databricks API refused" in text and "node type i3 is not supported" in text

    cluster.fail("POST", "runs/submit", 503, error_code="TEMPORARILY_UNAVAILABLE", message="busy")
    retried = run_assets(settings, ["sources"])
    assert retried.success, failure_text(retried)  # the SDK retried the 503
    assert [c.status for c in cluster.calls("runs/submit")][-2:] == [503, 200]

    cluster.script_runs("fail")
    text = failure_text(run_assets(settings, ["sources"]))
    assert "ended FAILED: Task failed: scripted failure" in text and f"{cluster.url}/#job/" in text

    cluster.script_runs("silent")
    text = failure_text(run_assets(settings, ["sources"]))
    assert "ended without reporting a result" in text and f"{cluster.url}/#job/" in text

    cluster.script_runs("internal_error")
    text = failure_text(run_assets(settings, ["sources"]))
    assert "hit an internal error: Run result unavailable" in text and f"{cluster.url}/#job/" in text

    monkeypatch.setenv("ONTOS_DATABRICKS_RUN_TIMEOUT", "2")  # sent as the run's timeout_seconds
    cluster.script_runs("hang")
    text = failure_text(run_assets(settings, ["sources"]))
    assert "ended TIMEDOUT: Run timed out" in text and f"{cluster.url}/#job/" in text
    assert cluster.calls("runs/submit")[-1].body["timeout_seconds"] == 2
    monkeypatch.delenv("ONTOS_DATABRICKS_RUN_TIMEOUT")

    cluster.cluster_lakehouse.drop("factory.makers")  # the step itself fails on the cluster
    text = failure_text(run_assets(settings, ["sources"]))
    assert "ended FAILED" in text and "factory.makers" in text


@pytest.mark.parametrize("compute", ["serverless", "existing:0123-456789-abcdefgh"])
def test_serverless_and_existing_cluster_runs(monkeypatch, cluster, home, widgets_dir, compute):
    workspace_env(monkeypatch, cluster.url, cluster.token, ONTOS_DATABRICKS_COMPUTE=compute)
    result = run_assets(databricks_settings(home, widgets_dir), ["sources"])
    assert result.success, failure_text(result)
    submit = cluster.calls("runs/submit", "POST")[-1].body
    task = submit["tasks"][0]
    assert "new_cluster" not in task
    parameters = task["spark_python_task"]["parameters"]
    assert "--dagster-pipes-context" in parameters and "--dagster-pipes-messages" in parameters
    if compute == "serverless":  # Pipes files on the volume, requirements in the job environment
        assert task["environment_key"] == "ontos" and "libraries" not in task
        dependencies = submit["environments"][0]["spec"]["dependencies"]
        assert "dagster==1.13.27" in dependencies
        assert cluster.calls(rf"/fs/files{VOLUME}/pipes/.*context.json", "PUT")
        assert not cluster.calls("dbfs/put")
    else:
        assert task["existing_cluster_id"] == "0123-456789-abcdefgh" and task["libraries"]
        assert cluster.calls("dbfs/put")


@pytest.mark.slow
def test_one_use_case_pipeline_on_databricks(monkeypatch, tmp_path, home, spark):
    """Every cluster step of one demo use case as a Databricks run with the Databricks resources: the
    `full_pipeline` job, then `monitor` (over the endpoint's payload table) and `improve`."""
    with fake_cluster(tmp_path) as ws:
        workspace_env(monkeypatch, ws.url, ws.token)
        instance = DagsterInstance.ephemeral()
        defs = build_definitions(databricks_settings(home, DEMO_USE_CASES))
        result = defs.resolve_job_def(FULL_PIPELINE).execute_in_process(
            partition_key="predictive_maintenance",
            instance=instance,
            run_config={"ops": {"sources": {"config": {"rows": 300}}}},
            raise_on_error=False,
        )
        assert result.success, failure_text(result)
        for name in (MONITOR, IMPROVE):
            later = defs.resolve_job_def(name).execute_in_process(
                partition_key="predictive_maintenance", instance=instance, raise_on_error=False
            )
            assert later.success, failure_text(later)
        report = instance.get_latest_materialization_event(AssetKey("monitoring_report")).asset_materialization
        assert report.metadata["requests"].value == 0  # no payload table yet: nothing was served
        gaps = instance.get_latest_materialization_event(AssetKey("gap_report")).asset_materialization
        assert gaps.metadata["evaluation"].value.endswith("(version 1, champion)")  # read back from Unity Catalog
        order = [s.body["run_name"].split(" [")[0].removeprefix("ontos ") for s in ws.calls("runs/submit", "POST")]
        assets = [o for o in order if "." not in o]
        assert assets == [
            "sources",
            "sheet",
            "canonical_labels",
            "template",
            "training_sheet",
            "training_export",
            "trained_model",
            "model_evaluation",
            "serving_endpoint",
            "monitoring_report",
            "gap_report",
            "annotation_tasks",
        ]
        assert order == assets  # checks run inside their asset's run
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert len(checks) == 11 and checks["promotion_gate"] and checks["export_excludes_prohibited"]
        evaluation = result.asset_materializations_for_node("model_evaluation")[0].metadata
        assert "Databricks Job Run URL" in evaluation
        token = ws.token
        assert all(token not in json.dumps(c.body, default=str) for c in ws.requests)
        assert all(token not in serialize_value(e) for e in instance.all_logs(result.run_id))
        for path in [*ws.root.rglob("*"), *ws.catalog.root.parent.rglob("*")]:
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
        assert AssetKey("serving_endpoint") in {e.asset_key for e in result.get_asset_materialization_events()}
        # every step ran with the Databricks resources: Unity Catalog tables, the workspace MLflow, Model Serving
        done = statements(ws)
        assert {d["text"].split(" (")[0] for d in done if d["text"].startswith("CREATE TABLE")} >= {
            f"CREATE TABLE IF NOT EXISTS ontos.workbench.{t}"
            for t in (
                "sheets",
                "templates",
                "canonical_labels",
                "qa_pairs",
                "training_runs",
                "model_evaluations",
                "serving_endpoints",
            )
        }
        assert {
            "kind": "write",
            "text": "saveAsTable ontos.workbench.qa_pairs",
            "mode": "overwrite",
            "format": "delta",
            "options": {"replaceWhere": "`training_sheet_id` = 'predictive_maintenance__failure_risk_30d'"},
        } in done
        created = ws.calls("serving-endpoints", "POST")[-1].body
        entity = created["config"]["served_entities"][0]
        assert (entity["entity_name"], entity["entity_version"]) == ("ontos.workbench.predictive_maintenance", "1")
        assert created["ai_gateway"]["inference_table_config"]["catalog_name"] == "ontos"
        from mlflow import MlflowClient

        store = MlflowClient(*[f"sqlite:///{tmp_path / 'runtime' / 'mlflow' / 'mlflow.db'}"] * 2)
        assert store.get_experiment_by_name("/Shared/ontos-predictive_maintenance") is not None
        assert (
            str(store.get_model_version_by_alias("ontos.workbench.predictive_maintenance", "champion").version) == "1"
        )


def test_ontos_commands_for_local_state_refuse_the_databricks_target(monkeypatch, capsys):
    from ontos_pipeline.cli import main

    monkeypatch.setenv("ONTOS_TARGET", "databricks")
    assert main(["tasks", "list", "predictive_maintenance"]) == 2
    error = capsys.readouterr().err
    assert "`ontos tasks` works on the embedded local target" in error and "dagster job execute" in error


def test_models_logged_on_databricks_carry_our_code():
    from ontos_pipeline.platform.model_store import databricks_store, local_store

    packaging = databricks_store("ontos", "workbench").packaging()
    assert "ontos-pipeline" not in packaging["pip_requirements"]  # not on PyPI: Model Serving could not install it
    assert [Path(p).name for p in packaging["code_paths"]] == ["ontos_pipeline"]
    assert (Path(packaging["code_paths"][0]) / "platform" / "model_store.py").exists()
    assert "code_paths" not in local_store(Path("/tmp/unused-ontos-home")).packaging()


def test_the_logged_pyfunc_loads_without_pyspark():
    """Model Serving installs the model's pip requirements (no pyspark): unpickling the pyfunc must not need it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pyspark':\n"
        "            raise ImportError(name + ' is not installed in Model Serving')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ontos_pipeline.train.pyfunc import OntosPyfunc\n"
        "print(OntosPyfunc.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ontos_pipeline.train.pyfunc"
    from ontos_pipeline.platform.model_store import PIP_REQUIREMENTS

    assert "pyspark" not in PIP_REQUIREMENTS
