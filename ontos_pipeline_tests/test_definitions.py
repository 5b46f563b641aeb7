"""The Dagster code location: loads, validates, and materializes sheets with blocking checks on a real instance."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, Definitions, materialize

from ontos_pipeline.data.sheet import current_sheet
from ontos_pipeline.definitions import build_definitions
from ontos_pipeline.pipeline import FULL_PIPELINE, IMPROVE, MONITOR, RETRAIN
from ontos_pipeline.resources.targets import orchestrator_resources
from ontos_pipeline_tests.conftest import DEMO_USE_CASES, make_settings
from ontos_pipeline_tests.widgets import good_widgets, write_widgets

DEMO = [
    "anomaly_detection",
    "calibration_insights",
    "defect_detection",
    "document_extraction",
    "invoice_extraction",
    "predictive_maintenance",
    "remaining_useful_life",
]


def test_definitions_load_validate_and_partition_by_use_case(home):
    defs = build_definitions(make_settings(home, DEMO_USE_CASES))
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    sheet = repo.asset_graph.get(AssetKey("sheet"))
    assert sheet.partitions_def.get_partition_keys() == DEMO
    assert sheet.group_name == "data"
    assert repo.asset_graph.get(AssetKey("sources")).group_name == "synthetic"
    groups = {k.to_user_string(): repo.asset_graph.get(k).group_name for k in repo.asset_graph.get_all_asset_keys()}
    assert groups == {
        "sources": "synthetic",
        "sheet": "data",
        "template": "generate",
        "training_sheet": "generate",
        "canonical_labels": "label",
        "training_export": "train",
        "trained_model": "train",
        "model_evaluation": "train",
        "serving_endpoint": "deploy",
        "inference_log": "monitor",
        "monitoring_report": "monitor",
        "feedback": "improve",
        "gap_report": "improve",
        "annotation_tasks": "improve",
    }
    checks = {k.name: repo.asset_graph.get(k).blocking for k in repo.asset_graph.asset_check_keys}
    assert checks == {
        "frame_rules": True,
        "item_ref_unique": True,
        "images_present": True,
        "phi_scan": True,
        "labels_valid": True,
        "label_coverage": True,
        "no_open_conflicts": False,
        "trainable_rows_allow_training": True,
        "export_excludes_prohibited": True,
        "export_files_valid": True,
        "promotion_gate": True,
        "monitoring_thresholds": False,
    }
    lineage = {
        k: sorted(d.to_user_string() for d in repo.asset_graph.get(AssetKey(k)).parent_keys)
        for k in (
            "canonical_labels",
            "trained_model",
            "model_evaluation",
            "serving_endpoint",
            "monitoring_report",
            "gap_report",
            "annotation_tasks",
        )
    }
    assert lineage == {
        "canonical_labels": ["feedback", "sheet"],
        "trained_model": ["training_export"],
        "model_evaluation": ["trained_model"],
        "serving_endpoint": ["model_evaluation"],
        "monitoring_report": ["inference_log", "serving_endpoint"],
        "gap_report": ["model_evaluation", "monitoring_report"],
        "annotation_tasks": ["gap_report"],
    }
    retrain = defs.resolve_job_def(RETRAIN)
    assert {k.to_user_string() for k in retrain.asset_layer.executable_asset_keys} == {
        "sheet",
        "template",
        "canonical_labels",
        "training_sheet",
        "training_export",
        "trained_model",
        "model_evaluation",
        "serving_endpoint",
    }
    sensor = defs.resolve_sensor_def("feedback_retrain_sensor")
    assert {j.name for j in sensor.jobs} == {RETRAIN, IMPROVE} and sensor.default_status.value == "RUNNING"
    improve = defs.resolve_job_def(IMPROVE)
    assert {k.to_user_string() for k in improve.asset_layer.executable_asset_keys} == {"gap_report", "annotation_tasks"}
    monitor = defs.resolve_job_def(MONITOR)
    assert {k.to_user_string() for k in monitor.asset_layer.executable_asset_keys} == {"monitoring_report"}
    schedule = defs.resolve_schedule_def("monitoring_schedule")
    assert schedule.job_name == MONITOR and schedule.cron_schedule == "0 * * * *"
    job = defs.resolve_job_def(FULL_PIPELINE)
    assert job.executor_def.name == "in_process"


def test_the_module_level_code_location_loads():
    from ontos_pipeline import definitions

    Definitions.validate_loadable(definitions.defs)


def test_bad_data_turns_blocking_checks_red_with_readable_descriptions(spark, lakehouse, home, widgets_dir):
    settings = make_settings(home, widgets_dir)
    widgets = good_widgets(home)
    widgets[3] = ("W2", 250.0, "green", str(home / "nope.png"), "mail me: x@y.com", "m1")
    write_widgets(spark, lakehouse, widgets)
    defs = build_definitions(settings)
    result = materialize(
        list(defs.assets),
        partition_key="widgets",
        resources=orchestrator_resources(settings),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {n: e.passed for n, e in evaluations.items()} == {
        "frame_rules": False,
        "item_ref_unique": False,
        "images_present": False,
        "phi_scan": False,
    }
    assert "W2 (x2)" in evaluations["item_ref_unique"].description
    assert (
        "column 'size_mm' fails in_range(0.0, 100.0): 1 rows, e.g. item_ref W2 (size_mm=250.0)"
        in evaluations["frame_rules"].description
    )
    assert "nope.png" in evaluations["images_present"].description
    assert "1 rows with email" in evaluations["phi_scan"].description


def test_materializing_a_demo_partition_twice_keeps_one_version(spark, lakehouse, home):
    settings = make_settings(home, DEMO_USE_CASES)
    instance = DagsterInstance.ephemeral()
    job = build_definitions(settings).resolve_job_def(FULL_PIPELINE)
    config = {"ops": {"sources": {"config": {"rows": 150}}}}
    first = job.execute_in_process(partition_key="predictive_maintenance", instance=instance, run_config=config)
    second = job.execute_in_process(partition_key="predictive_maintenance", instance=instance, run_config=config)
    assert all(
        e.passed
        for r in (first, second)
        for e in r.get_asset_check_evaluations()
        if e.check_name != "no_open_conflicts"
    )  # the demo data plants a few conflicting labels
    versions = [r.asset_materializations_for_node("sheet")[0].metadata["version"].value for r in (first, second)]
    assert versions[0] == versions[1]
    snap = current_sheet(lakehouse, "predictive_maintenance")
    assert snap.version == versions[0] and snap.row_count == 150
    sheet = lakehouse.read(spark, snap.table)
    assert sheet.count() == sheet.select("item_ref").distinct().count() == 150
    assert lakehouse.read(spark, "sheets").count() == 1
    training = [r.asset_materializations_for_node("training_sheet")[0].metadata for r in (first, second)]
    assert training[0]["version"] == training[1]["version"]
    assert (training[0]["new_version"].value, training[1]["new_version"].value) == (True, False)
    assert lakehouse.read(spark, "qa_pairs").count() == 150  # no duplicate pairs on re-run
    assert lakehouse.row_count("acme_raw.equipment_telemetry") == 150
