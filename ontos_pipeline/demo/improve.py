"""The demo's IMPROVE phase: the daemon's sensor retrains by itself, then gap reports and annotation tasks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd

from ontos_pipeline.demo.daemon import DaemonProcess, sensor_cursor, wait_for_sensor_runs
from ontos_pipeline.demo.runs import RunPool, RunRequest
from ontos_pipeline.demo.traffic import TRUTH
from ontos_pipeline.settings import Settings
from ontos_pipeline.specs import UseCaseSpec

SENSOR_INTERVAL = 5  # seconds between sensor evaluations while the demo waits
RETRAIN_TIMEOUT = 3600.0
GATE_STEP = "model_evaluation"  # a run that stops only here on a failed promotion_gate kept its model out: no error


def improve_loop(
    settings: Settings,
    pool: RunPool,
    instance,
    specs: list[UseCaseSpec],
    held_out: dict[str, pd.DataFrame],
    run_config: dict,
) -> tuple[list[list[object]], int]:
    """Run the sensor through the daemon, wait for its retrains, materialize gaps and tasks; summary rows."""
    from ontos_pipeline.improve.retrain import evaluate_retrains, parse_cursor
    from ontos_pipeline.pipeline import IMPROVE
    from ontos_pipeline.platform.model_store import CHAMPION

    lakehouse, store = settings.local_lakehouse(), settings.local_model_store()
    by_name = {s.name: s for s in specs}
    first = {s.name: store.version(s.name, CHAMPION) for s in specs}
    decisions, _ = evaluate_retrains(lakehouse, by_name, parse_cursor(sensor_cursor(instance)))
    wanted = [d.use_case for d in decisions if d.run_key]
    print(f"\n4/5 the Dagster daemon evaluates feedback_retrain_sensor every {SENSOR_INTERVAL} s", flush=True)
    for d in decisions:
        print(f"  {'retrain due' if d.run_key else 'no retrain'} -- {d.reason}", flush=True)
    runs, failed = {}, 0
    if wanted:
        since = datetime.now(UTC)
        with DaemonProcess(settings, SENSOR_INTERVAL) as daemon:
            runs = wait_for_sensor_runs(instance, daemon, since, wanted, RETRAIN_TIMEOUT, _progress)
    outcomes = {}
    for name, run in runs.items():
        outcomes[name] = _outcome(instance, run, lakehouse, by_name[name])
        failed += outcomes[name].startswith("FAILED")

    print("\n5/5 gap reports and annotation tasks", flush=True)
    quiet = {k: v for k, v in run_config.items() if k != "ops"}  # the pipeline's op config is not this job's
    finished = pool.run(
        [RunRequest(IMPROVE, spec.name, quiet, {"ontos/command": "demo"}) for spec in specs],
        lambda f: print(
            f"  {f.request.partition}: {'ok' if f.result.success else 'FAILED'} (run {f.result.run_id[:8]})", flush=True
        ),
    )
    failed += sum(not f.result.success for f in finished)

    rows = []
    for spec in specs:
        now = store.version(spec.name, CHAMPION)
        scores = _drifted_scores(store, spec, held_out.get(spec.name), first[spec.name], now)
        run = runs.get(spec.name)
        used = "-" if run is None else run.tags.get("ontos/actionable_feedback", "-")
        labels = _feedback_labels(lakehouse, spec)
        rows.append(
            [
                spec.name,
                spec.training.gate.metric,
                *scores,
                f"{used} ({labels} labels)",
                _served(first[spec.name], now),
                _open_tasks(lakehouse, spec.name),
                outcomes.get(spec.name, "not requested"),
            ]
        )
    return rows, failed


def _progress(run) -> None:
    print(
        f"  {run.tags.get('dagster/partition')}: retrain run {run.run_id[:8]} requested by the sensor "
        f"({run.tags.get('ontos/actionable_feedback')} actionable feedback) -- {run.status.value.lower()}",
        flush=True,
    )


def _outcome(instance, run, lakehouse, spec: UseCaseSpec) -> str:
    """'deployed vN', 'kept: <why>' or 'FAILED: <steps>' for one retrain run."""
    from dagster import DagsterEventType, DagsterRunStatus

    from ontos_pipeline.deploy.endpoints import history

    events = [e for e in history(lakehouse, spec.name) if e["actor"] == f"dagster run {run.run_id}"]
    if run.status == DagsterRunStatus.SUCCESS and events:
        e = events[-1]
        return f"deployed v{e['served_version']}" if e["event"] == "deploy" else f"kept: {e['reason']}"
    failures = {r.step_key for r in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)}
    evaluations = sorted(
        lakehouse.records("model_evaluations", {"use_case": spec.name, "dagster_run_id": run.run_id}),
        key=lambda r: r["created_at"],
    )
    if failures == {GATE_STEP} and evaluations and not evaluations[-1]["gate_passed"]:
        rules = json.loads(evaluations[-1]["gate_details"]) if evaluations else []
        why = "; ".join(f"{r['rule']}: {r['detail']}" for r in rules if not r["passed"])
        return f"gate kept the champion: {why or 'see the promotion_gate check'}"
    return f"FAILED: {', '.join(sorted(failures)) or run.status.value} (run {run.run_id[:8]})"


def _drifted_scores(store, spec: UseCaseSpec, frame: pd.DataFrame | None, first, now) -> list[str]:
    """Items, baseline, first model, retrained model, and the change with its paired 95% bootstrap interval."""
    if frame is None or frame.empty or first is None:
        return ["-", "-", "-", "-", "-"]
    base = headline(spec, store.load(baseline_uri(store, spec.name, first.version)), frame)
    before = store.load(store.version_uri(spec.name, first.version))
    if now.version == first.version:
        value = headline(spec, before, frame)
        return [str(len(frame)), _num(base), _num(value), _num(value), "same model"]
    change = drifted_change(spec, before, store.load(store.version_uri(spec.name, now.version)), frame)
    return [str(len(frame)), _num(base), _num(change.champion), _num(change.challenger), _change(spec, change)]


def drifted_change(spec: UseCaseSpec, before, after, frame: pd.DataFrame):
    """The gate metric of `after` minus `before` (ResponseModels) on `frame`, with its paired bootstrap interval."""
    from ontos_pipeline.train.evaluation import paired_difference

    items = frame.drop(columns=[TRUTH])
    return paired_difference(
        spec.template.response_kind,
        frame[TRUTH].tolist(),
        after.predict_frame(items),
        before.predict_frame(items),
        after.template.response_schema,
        spec.training.gate.metric,
    )


def _change(spec: UseCaseSpec, change) -> str:
    from ontos_pipeline.train.metrics import HIGHER_IS_BETTER

    higher = HIGHER_IS_BETTER[spec.training.gate.metric]
    verdict = (
        "better" if change.better_beyond_noise(higher) else "WORSE" if change.worse_beyond_noise(higher) else "noise"
    )
    interval = "" if change.low is None else f" [{change.low:+.3f}, {change.high:+.3f}]"
    return f"{change.value:+.3f}{interval} {verdict}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _served(first, now) -> str:
    if now is None:
        return "none"
    return f"v{now.version}" if first is None or first.version == now.version else f"v{first.version} -> v{now.version}"


def _feedback_labels(lakehouse, spec: UseCaseSpec) -> int:
    """Current canonical labels of the use case that came from feedback (the sheet id is the use case name)."""
    from ontos_pipeline.platform.spark_session import get_spark
    from ontos_pipeline.train.training_data import feedback_items

    return len(feedback_items(get_spark(), lakehouse, spec, spec.name).all)


def _open_tasks(lakehouse, use_case: str) -> int:
    rows = lakehouse.records("annotation_tasks", {"use_case": use_case}, columns=["status"])
    return sum(r["status"] in ("pending", "in_progress") for r in rows)


# -- did the retrain help? ---------------------------------------------------------------------------------------
def headline(spec: UseCaseSpec, model, frame) -> float | None:
    """The spec's gate metric of `model` (a ResponseModel) on `frame`: item columns plus the truth column."""
    from ontos_pipeline.train.trainer.scoring import score

    prediction = model.predict_frame(frame.drop(columns=[TRUTH]))
    value = score(spec.template.response_kind, frame[TRUTH].tolist(), prediction, model.template.response_schema).get(
        spec.training.gate.metric
    )
    return None if value is None else float(value)


def baseline_uri(store, use_case: str, version: str) -> str:
    """The pyfunc of the baseline fitted in the same training run as `version`."""
    mv = store.client().get_model_version(store.model_name(use_case), version)
    return f"runs:/{store.client().get_run(mv.run_id).data.tags['ontos.baseline_run_id']}/model"
