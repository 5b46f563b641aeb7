"""Monitoring in Spark over real inference-log and feedback tables: hand-computed rates and percentiles, drift on the
synthetic drifted batch (and none on held-out normal items), the drift statistics, and the alert lifecycle."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.improve.gaps import latest_drift_report
from ontos_pipeline.monitor import alerts
from ontos_pipeline.monitor.alerts import AlertError, Breach
from ontos_pipeline.monitor.drift import categorical_drift, numeric_drift, psi
from ontos_pipeline.monitor.monitoring import QUANTILES, REPORTS, Window, breaches, latest_report, monitor
from ontos_pipeline.specs import load_use_case
from ontos_pipeline_tests.conftest import DEMO_USE_CASES
from ontos_pipeline_tests.kinds import items, kind_spec
from synthetic_data.generator import generate_tables

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _request(
    i: int, endpoint: str, record: dict, answer: object, latency: float, status: int = 200, at: datetime | None = None
) -> dict:
    return {
        "request_id": f"r{i}",
        "request_time": at or T0 + timedelta(seconds=i),
        "endpoint_name": endpoint,
        "model_version": "1",
        "inputs": json.dumps([record], default=str),
        "response": json.dumps([{"response": answer, "confidence": 0.8}]) if status == 200 else None,
        "latency_ms": latency,
        "status_code": status,
        "error": None if status == 200 else "bad input",
    }


def test_rates_percentiles_and_feedback_accuracy_match_hand_computed_values(spark, lakehouse, tmp_path):
    spec, _ = kind_spec(tmp_path, "enum")
    frame = items("enum", 40, 5)
    rng = np.random.default_rng(3)
    latency = rng.gamma(2.0, 15.0, 40).round(3)
    status = [200] * 36 + [400, 400, 413, 500]
    answers = ["low", "mid", "high"] * 13 + ["low"]
    rows = [
        _request(i, "enum_case", {k: v for k, v in r.items() if k != "response"}, answers[i], latency[i], status[i])
        for i, r in enumerate(frame.to_dict("records"))
    ]
    rows += [
        _request(100, "enum_case", rows[0] | {}, "low", 9999.0, at=T0 - timedelta(hours=2)),  # outside
        _request(101, "other", {}, "low", 9999.0),
    ]  # another endpoint
    lakehouse.append_records(INFERENCE_LOG, rows)
    fb = [  # request -> feedback; the latest (highest seq) per request counts, rejected feedback never does
        ("r0", "up", None, "new"),
        ("r0", "down", None, "new"),
        ("r1", "up", None, "new"),
        ("r2", "up", None, "new"),
        ("r3", "down", None, "new"),
        ("r4", None, "mid", "new"),  # r4 answered "mid": the correction agrees
        ("r5", "down", "low", "new"),  # r5 answered "high": wrong
        ("r6", "up", None, "rejected"),
        ("r38", "up", None, "new"),  # r38 failed: no answer to judge
    ]
    lakehouse.append_records(
        "feedback",
        [
            {
                "feedback_id": f"f{i}",
                "seq": i + 1,
                "use_case": spec.name,
                "request_id": rid,
                "rating": rating,
                "correction": correction and json.dumps(correction),
                "status": state,
                "created_at": T0,
            }
            for i, (rid, rating, correction, state) in enumerate(fb)
        ],
    )
    reference = spark.createDataFrame(items("enum", 200, 9).assign(response=lambda d: d.response.map(json.dumps)))
    report = monitor(spark, lakehouse, spec, Window(T0, T0 + timedelta(minutes=5)), reference)

    assert report.request_count == 40 and report.records == 36
    assert report.error_rate == pytest.approx(4 / 40)
    expected = np.percentile(latency, [50, 95, 99])  # linear interpolation, like Spark's percentile
    assert [report.latency_ms[k] for k in ("p50", "p95", "p99")] == pytest.approx(expected, rel=1e-9)
    assert report.status_counts == {"200": 36, "400": 2, "413": 1, "500": 1}
    assert report.response_distribution == {"low": 12, "mid": 12, "high": 12}
    # judged: r0 (down), r1 (up), r2 (up), r3 (down), r4 (correction agrees), r5 (correction disagrees)
    assert report.feedback_count == 6
    assert report.positive_feedback_rate == pytest.approx(2 / 5)  # rated: r0 down, r1 up, r2 up, r3 down, r5 down
    assert report.accuracy == pytest.approx(3 / 6)
    found = {b.metric: b for b in breaches(report, spec)}
    assert found["error_rate"].message == "error_rate = 0.1 > threshold 0.05"
    assert "latency_p95_ms" not in found


def _table(gen, name: str) -> pa.Table:
    table = next(t for t in gen if t.name == name)
    return pa.Table.from_batches(list(table.batches()), table.schema)


def test_drift_is_found_on_the_drifted_batch_and_not_on_held_out_normal_items(spark, lakehouse, tmp_path):
    spec = load_use_case(DEMO_USE_CASES / "remaining_useful_life.yaml")
    generated = generate_tables("remaining_useful_life", rows=1400, drifted_rows=300, seed=16, image_dir=tmp_path)
    normal = _table(generated, "acme_raw.asset_health_snapshots").to_pandas()
    drifted = _table(generated, "acme_raw.asset_health_snapshots_drifted").to_pandas()
    labels = {
        r["item_ref"]: r["label_data"] for r in _table(generated, "acme_raw.remaining_useful_life_labels").to_pylist()
    }
    drifted_labels = {
        r["item_ref"]: r["label_data"]
        for r in _table(generated, "acme_raw.remaining_useful_life_labels_drifted").to_pylist()
    }
    train, held_out = normal.iloc[:1000], normal.iloc[1000:1300]
    reference = spark.createDataFrame(train.assign(response=train.item_ref.map(labels)))
    rows = [
        _request(i, spec.serving.endpoint_name, r, json.loads(labels[r["item_ref"]]), 10.0)
        for i, r in enumerate(held_out.to_dict("records"))
    ]
    later = T0 + timedelta(hours=1)
    rows += [
        _request(
            1000 + i,
            spec.serving.endpoint_name,
            r,
            json.loads(drifted_labels[r["item_ref"]]),
            10.0,
            at=later + timedelta(seconds=i),
        )
        for i, r in enumerate(drifted.to_dict("records"))
    ]
    lakehouse.append_records(INFERENCE_LOG, rows)

    calm = monitor(spark, lakehouse, spec, Window(T0, later), reference)
    shifted = monitor(spark, lakehouse, spec, Window(later, later + timedelta(hours=1)), reference)
    assert (calm.records, shifted.records) == (300, 300)
    columns = {
        "asset_class",
        "age_days",
        "cycles",
        "avg_load_pct",
        "maintenance_count",
        "days_since_maintenance",
        "vibration_trend",
        "temperature_trend",
        "prediction",
    }
    assert {d.column for d in calm.drift} == {d.column for d in shifted.drift} == columns
    assert calm.drifted == [], [d.record() for d in calm.drift]
    # harder-run assets (less life) and the new gearboxes (more) move the inputs; their answers' mix partly cancels
    assert {"avg_load_pct", "cycles", "asset_class"} <= set(shifted.drifted), [d.record() for d in shifted.drift]
    for d in shifted.drift:
        assert d.drifted == (d.psi >= 0.2 and d.p_value < 0.05)
    assert {b.metric for b in breaches(shifted, spec)} == {f"psi[{c}]" for c in shifted.drifted}

    # reports computed out of order (concurrent runs, backfills): the latest is the one of the latest window
    lakehouse.append_records(REPORTS, [shifted.record()])
    lakehouse.append_records(REPORTS, [calm.record()])
    assert latest_report(lakehouse, spec).report_id == shifted.report_id
    assert latest_drift_report(lakehouse, spec.name).report_id == shifted.report_id
    assert latest_report(lakehouse, spec, run_id="run-x").report_id == shifted.report_id  # no report of that run


def test_drift_statistics():
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    expected = 0.4 * np.log(0.9 / 0.5) + (-0.4) * np.log(0.1 / 0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 3000), rng.normal(0.15, 1, 2000)
    edges = np.quantile(a, QUANTILES)

    def bins(x):
        inner = (x[:, None] >= edges[1:-1][None, :]).sum(axis=1)
        return np.bincount(np.where(x < edges[0], 0, np.where(x > edges[-1], 21, 1 + inner)), minlength=22)

    d = numeric_drift("x", bins(a).tolist(), bins(b).tolist(), 0.2, 0.05)
    exact = stats.ks_2samp(a, b)
    assert d.statistic <= exact.statistic + 1e-12 and d.statistic == pytest.approx(exact.statistic, abs=0.02)
    assert d.p_value < 0.05 and not d.drifted  # significant but small: PSI stays below 0.2
    same = categorical_drift("c", {"a": 500, "b": 500}, {"a": 260, "b": 240}, 0.2, 0.05)
    moved = categorical_drift("c", {"a": 500, "b": 500}, {"a": 50, "b": 300, "new": 150}, 0.2, 0.05)
    assert not same.drifted and same.p_value > 0.05
    assert moved.drifted and moved.p_value < 1e-6 and moved.psi > 1


def test_alert_lifecycle_and_deduplication(lakehouse):
    drift, errors = Breach("drift", "psi[x]", 0.31, 0.2, ">="), Breach("error_rate", "error_rate", 0.1, 0.05, ">")
    opened = alerts.raise_alerts(lakehouse, "uc", [drift, errors], "rep1")
    assert [a["message"] for a in opened] == ["psi[x] = 0.31 >= threshold 0.2", "error_rate = 0.1 > threshold 0.05"]
    assert alerts.raise_alerts(lakehouse, "uc", [drift], "rep2") == []  # still open: not raised twice
    first = opened[0]["alert_id"]
    assert alerts.transition(lakehouse, first, "acknowledged", "ann")["status"] == "acknowledged"
    with pytest.raises(AlertError, match=f"alert {first} is acknowledged; only open alerts can become acknowledged"):
        alerts.transition(lakehouse, first, "acknowledged", "ann")
    assert alerts.raise_alerts(lakehouse, "uc", [drift], "rep3") == []  # acknowledged is still active
    done = alerts.transition(lakehouse, first[:6], "resolved", "bob")  # a unique prefix is enough
    assert (done["status"], done["actor"]) == ("resolved", "bob") and done["resolved_at"] is not None
    with pytest.raises(AlertError, match="is resolved"):
        alerts.transition(lakehouse, first, "resolved", "bob")
    with pytest.raises(AlertError, match="no alert 'zzz'"):
        alerts.transition(lakehouse, "zzz", "resolved", "bob")
    assert len(alerts.raise_alerts(lakehouse, "uc", [drift], "rep4")) == 1  # came back after it was resolved
    listed = alerts.list_alerts(lakehouse, "uc")
    assert sorted(a["status"] for a in listed) == ["open", "open", "resolved"]
    assert alerts.list_alerts(lakehouse, "uc", "resolved")[0]["acknowledged_at"] is not None


def test_the_monitoring_check_turns_red_naming_metric_value_and_threshold(spark, tmp_path):
    from dagster import DagsterInstance

    from ontos_pipeline.definitions import build_definitions
    from ontos_pipeline.pipeline import MONITOR
    from ontos_pipeline.platform.lakehouse import LocalLakehouse
    from ontos_pipeline_tests.conftest import make_settings

    cases = tmp_path / "cases"
    cases.mkdir()
    spec, _ = kind_spec(cases, "enum")
    settings = make_settings(tmp_path / "home", cases)
    lakehouse = LocalLakehouse(settings.tables_dir, files_root=settings.home / "files")
    record = items("enum", 1, 1).drop(columns=["response"]).iloc[0].to_dict()
    lakehouse.append_records(
        INFERENCE_LOG,
        [_request(i, spec.serving.endpoint_name, record, "low", 5.0 + i, 200 if i % 2 else 503) for i in range(20)],
    )
    job = build_definitions(settings).resolve_job_def(MONITOR)
    config = {
        "ops": {
            "monitoring_report": {"config": {"since": T0.isoformat(), "until": (T0 + timedelta(minutes=1)).isoformat()}}
        }
    }
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=spec.name, instance=instance, run_config=config)
    assert result.success  # a breach is a red check, not a failed run
    report = {k: v.value for k, v in result.asset_materializations_for_node("monitoring_report")[0].metadata.items()}
    assert (report["requests"], report["error_rate"], report["served_version"]) == (20, 0.5, "none (no champion)")
    check = result.get_asset_check_evaluations()[0]
    assert (check.check_name, check.passed) == ("monitoring_thresholds", False)
    assert check.description == "error_rate = 0.5 > threshold 0.05"
    assert [(a["kind"], a["status"]) for a in alerts.list_alerts(lakehouse, spec.name)] == [("error_rate", "open")]


def _feedback_rows(spec_name: str, rows: list[tuple]) -> list[dict]:
    return [
        {
            "feedback_id": f"f{i}",
            "seq": i + 1,
            "use_case": spec_name,
            "request_id": rid,
            "rating": rating,
            "correction": None if correction is None else json.dumps(correction),
            "status": "new",
            "created_at": T0,
        }
        for i, (rid, rating, correction) in enumerate(rows)
    ]


def test_number_corrections_are_scored_by_error_within_the_trainers_tolerance(spark, lakehouse, tmp_path):
    spec, _ = kind_spec(tmp_path, "number")
    frame = items("number", 8, 5)
    answers = [100.0, 100.0, 100.0, 100.0, 250.0, 250.0, 40.0, 40.0]
    lakehouse.append_records(
        INFERENCE_LOG,
        [
            _request(i, "number_case", {k: v for k, v in r.items() if k != "response"}, answers[i], 5.0)
            for i, r in enumerate(frame.to_dict("records"))
        ],
    )
    training = items("number", 200, 9)
    tolerance = 0.1 * float(np.ptp(training.response))  # what the trainer counts as close (10% of the range)
    lakehouse.append_records(
        "feedback",
        _feedback_rows(
            spec.name,
            [
                ("r0", None, 100.0),  # exact
                ("r1", "down", 100.0 + 0.5 * tolerance),  # close: right, though not equal
                ("r2", "down", 100.0 + 2 * tolerance),  # far off
                ("r3", None, 100.0 - 3 * tolerance),
                ("r4", "up", None),
                ("r5", "down", None),
            ],
        ),
    )
    reference = spark.createDataFrame(training.assign(response=lambda d: d.response.map(json.dumps)))
    report = monitor(spark, lakehouse, spec, Window(T0, T0 + timedelta(minutes=5)), reference)
    assert report.feedback_count == 6
    assert report.accuracy == pytest.approx(3 / 6)  # r0, r1 within tolerance, r4 thumbs up
    assert report.number_feedback == {
        "corrections": 4,
        "mae": pytest.approx((0 + 0.5 + 2 + 3) * tolerance / 4),
        "tolerance": pytest.approx(tolerance),
        "within_tolerance": pytest.approx(2 / 4),
    }
    spec_min = replace(spec, monitoring=replace(spec.monitoring, min_accuracy=0.6))
    assert [b.message for b in breaches(report, spec_min) if b.kind == "accuracy"] == ["accuracy = 0.5 < threshold 0.6"]
    # no served model, so no training rows: the schema's range (0..1000) gives the tolerance
    without = monitor(spark, lakehouse, spec, Window(T0, T0 + timedelta(minutes=5)), None)
    assert without.number_feedback["tolerance"] == pytest.approx(100.0)
    errors = [0, 0.5 * tolerance, 2 * tolerance, 3 * tolerance]
    assert without.number_feedback["within_tolerance"] == pytest.approx(sum(e <= 100 for e in errors) / 4)
    assert without.accuracy == pytest.approx((sum(e <= 100 for e in errors) + 1) / 6)


def _png(path, level: float, size: tuple[int, int] = (16, 16), spread: float = 12.0, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.normal(level, spread, (size[1], size[0], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(path)
    return str(path)


def test_image_statistics_of_paths_inline_content_and_unreadable_cells(tmp_path):
    import base64

    import pandas as pd
    from PIL import Image

    from ontos_pipeline.monitor.monitoring import image_statistics

    grey = tmp_path / "grey.png"
    pixels = np.zeros((10, 20), dtype="uint8")
    pixels[:, 10:] = 255  # half black, half white: mean 0.5, standard deviation 0.5
    Image.fromarray(pixels, "L").save(grey)
    inline = "data:image/png;base64," + base64.b64encode(grey.read_bytes()).decode()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    cells = pd.Series([str(grey), inline, None, str(broken), str(tmp_path / "gone.png")], index=[5, 6, 7, 8, 9])
    stats = image_statistics(cells)
    assert list(stats.index) == [5, 6, 7, 8, 9]
    assert stats.loc[5].tolist() == [0.5, 0.5, 20.0, 10.0, "false"]
    assert stats.loc[6].tolist() == stats.loc[5].tolist()  # inline content reads like the file
    assert stats.loc[7].isna().all()  # a null cell is missing, not unreadable
    for i in (8, 9):
        assert stats.loc[i, "unreadable"] == "true" and stats.loc[i, ["brightness", "width"]].isna().all()


def test_image_columns_drift_on_brightness_size_and_unreadable_share(spark, lakehouse, tmp_path, widgets_dir):
    from ontos_pipeline.improve.gaps import drift_gaps

    spec = load_use_case(widgets_dir / "widgets.yaml")
    rng = np.random.default_rng(2)
    pictures = tmp_path / "pictures"
    pictures.mkdir()

    def rows(n: int, offset: int, level: float, size=(16, 16), broken: float = 0.0) -> list[dict]:
        out = []
        for i in range(n):
            photo = pictures / f"{offset + i}.png"
            if rng.random() < broken:
                photo.write_bytes(b"not an image")
            else:
                _png(photo, rng.normal(level, 8), size, seed=offset + i)
            out.append(
                {
                    "item_ref": f"W{offset + i}",
                    "size_mm": float(rng.uniform(10, 90)),
                    "color": ["red", "blue"][i % 2],
                    "photo": str(photo),
                    "notes": "fine",
                }
            )
        return out

    import pandas as pd

    train = pd.DataFrame(rows(300, 0, 90.0))
    reference = spark.createDataFrame(train.assign(maker="m", response=json.dumps("ok")))
    later = T0 + timedelta(hours=1)
    calm = [_request(i, "widgets", r, "ok", 5.0) for i, r in enumerate(rows(150, 1000, 90.0))]
    shifted = [
        _request(2000 + i, "widgets", r, "ok", 5.0, at=later + timedelta(seconds=i))
        for i, r in enumerate(rows(150, 2000, 170.0, size=(24, 20), broken=0.3))
    ]
    lakehouse.append_records(INFERENCE_LOG, calm + shifted)

    quiet = monitor(spark, lakehouse, spec, Window(T0, later), reference)
    moved = monitor(spark, lakehouse, spec, Window(later, later + timedelta(hours=1)), reference)
    image_features = {f"photo:{s}" for s in ("brightness", "contrast", "width", "height", "unreadable")}
    assert image_features <= {d.column for d in quiet.drift} == {d.column for d in moved.drift}
    assert not image_features & set(quiet.drifted), [d.record() for d in quiet.drift]
    by_column = {d.column: d for d in moved.drift}
    assert {"photo:brightness", "photo:width", "photo:height", "photo:unreadable"} <= set(moved.drifted)
    assert by_column["photo:brightness"].reference_rows == 300 and by_column["photo:brightness"].current_rows < 150
    assert by_column["photo:unreadable"].kind == "categorical" and by_column["photo:unreadable"].current_rows == 150
    assert "size_mm" not in moved.drifted  # the other inputs did not move
    assert {"psi[photo:brightness]", "psi[photo:unreadable]"} <= {b.metric for b in breaches(moved, spec)}

    gaps = {g.subject: g for g in drift_gaps(spark, lakehouse, spec, moved, None)}
    assert gaps["photo:brightness"].evidence["served_p50"] == pytest.approx(170 / 255, abs=0.05)
    broken = sum(Path(json.loads(r["inputs"])[0]["photo"]).read_bytes() == b"not an image" for r in shifted)
    assert 20 < broken < 70 and "true" in gaps["photo:unreadable"].region["values"]
    assert gaps["photo:unreadable"].evidence["served_share"]["true"] == pytest.approx(broken / 150)


def test_a_window_whose_answers_were_all_withheld_still_gets_its_response_distribution(spark):
    """Guardrails can withhold every answer of a window (abstain, refused output): no prediction, still a report."""
    from ontos_pipeline.monitor.monitoring import NO_ANSWER, PREDICTION, response_distribution

    rows = spark.createDataFrame([(None,), (None,), ('{"total_amount": 12.5}',)], f"{PREDICTION} string")
    assert response_distribution(rows, "object") == {
        "distinct": 2,
        "top": {NO_ANSWER: 2, '{"total_amount": 12.5}': 1},
    }
