"""A snapshot of the code location per target, as dagster-open-platform pins its definitions: every asset spec
(key, group, deps, kinds, description, partitions), every check (name, asset, blocking, description), every job
(name, description, assets it selects), the schedule and sensor (names, jobs, defaults) and the run keys the
schedule and the retrain sensor request. A change to any of them fails here; rewrite the snapshot on purpose with
`ONTOS_UPDATE_SNAPSHOTS=1 uv run pytest ontos_pipeline_tests/test_definitions_snapshot.py`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, build_schedule_context

from ontos_pipeline.definitions import build_definitions
from ontos_pipeline.settings import Settings
from ontos_pipeline_tests.conftest import DEMO_USE_CASES

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
TICK = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def describe(defs: Definitions) -> dict:
    graph = defs.get_repository_def().asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kinds": sorted(node.kinds),
            "description": node.description,
            "observable": node.is_observable,
            "partitions": sorted(node.partitions_def.get_partition_keys()) if node.partitions_def else None,
            "checks": {
                c.name: {"blocking": graph.get(c).blocking, "description": graph.get(c).description}
                for c in sorted(node.check_keys, key=lambda c: c.name)
            },
        }
    jobs = {}
    for job in sorted(defs.get_repository_def().get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        jobs[job.name] = {
            "description": job.description,
            "assets": sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys),
            "checks": sorted(
                f"{c.asset_key.to_user_string()}:{c.name}" for c in job.asset_layer.asset_graph.asset_check_keys
            ),
        }
    schedules = {}
    repository = defs.get_repository_def()
    for schedule in defs.schedules or []:
        with DagsterInstance.ephemeral() as instance:
            context = build_schedule_context(
                instance=instance, scheduled_execution_time=TICK, repository_def=repository
            )
            requests = list(schedule.evaluate_tick(context).run_requests or [])
        schedules[schedule.name] = {
            "cron": schedule.cron_schedule,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
            "run_keys": [r.run_key for r in requests],
            "partitions": [r.partition_key for r in requests],
        }
    sensors = {
        s.name: {
            "jobs": sorted(t.job_name for t in s.targets),  # the retrain sensor requests two, the notifiers none
            "interval": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in defs.sensors or []
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": sorted(defs.resources),
    }


def retrain_run_keys() -> dict:
    """What the retrain sensor requests for given arrivals (its cursor logic is a plain function)."""
    from ontos_pipeline.improve.retrain import Arrivals, CursorEntry, decide
    from ontos_pipeline.specs import load_use_cases

    out = {}
    for name, spec in sorted(load_use_cases(DEMO_USE_CASES).items()):
        seen = Arrivals(name, last_seq=57, actionable=40, feedback=45, reviewed_total=12)
        decision = decide(spec, CursorEntry(seq=9, reviewed=2, observed=9), seen)
        out[name] = {"run_key": decision.run_key, "tags": dict(decision.tags), "cursor": decision.cursor.to_json()}
    return out


@pytest.fixture
def databricks_env(monkeypatch):
    for var in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", "https://placeholder.cloud.databricks.com")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-placeholder")
    monkeypatch.setenv("ONTOS_DATABRICKS_VOLUME", "/Volumes/ontos/workbench/ontos")


def test_asset_specs_checks_jobs_and_run_keys_per_target_match_the_snapshot(databricks_env, home):
    current = {
        target: describe(build_definitions(Settings(target, home, "ontos", "workbench", DEMO_USE_CASES)))
        for target in ("local", "databricks")
    }
    current["retrain_sensor_run_keys"] = retrain_run_keys()
    text = json.dumps(current, indent=1, sort_keys=True) + "\n"
    if os.environ.get("ONTOS_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text)
    assert json.loads(text) == json.loads(SNAPSHOT.read_text())
    # the two targets differ only where they must: the sensor reads local tables
    local, remote = current["local"], current["databricks"]
    assert local["assets"] == remote["assets"] and local["jobs"] == remote["jobs"]
    notifications = {"run_failure_notification_sensor", "notification_retry_sensor"}  # they read the instance only
    assert set(remote["sensors"]) == notifications
    assert set(local["sensors"]) == {"feedback_retrain_sensor"} | notifications
