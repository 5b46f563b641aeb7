"""`ontos demo`: the loop on the embedded default, recorded in the Dagster instance under ONTOS_HOME.

1. the `full_pipeline` job per use case: data, labels, training sheet, model, evaluation, gate, endpoint;
2. `ontos serve` in a child process: normal traffic, then the drifted batch lands in the source tables (new
   production data) and half of it is sent as traffic with feedback over real HTTP;
3. the `monitor` job per use case and window (normal, then drifted traffic), which raises alerts;
4. the Dagster daemon evaluates `feedback_retrain_sensor`, which requests the `retrain` runs (labels from feedback,
   training sheet, model, evaluation, gate, endpoint) by itself;
5. the `improve` job per use case: gap report and annotation tasks. The last table compares the first model's
   baseline, the first model and the retrained model on the drifted items that got no feedback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import requests

from ontos_pipeline.demo.improve import GATE_STEP, improve_loop
from ontos_pipeline.demo.runs import FinishedRun, RunPool, RunRequest
from ontos_pipeline.platform.console import format_table
from ontos_pipeline.platform.threads import concurrent_runs
from ontos_pipeline.settings import Settings, load_settings
from ontos_pipeline.specs import UseCaseSpec, load_use_cases

TRAFFIC = 200  # requests per use case and batch
DRIFTED_FEEDBACK = 0.9  # share of drifted answers that get feedback, and of wrong ones that get a correction


def run_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from ontos_pipeline.definitions import build_definitions
    from ontos_pipeline.instance import prepare_dagster_home
    from ontos_pipeline.pipeline import FULL_PIPELINE

    settings = load_settings()
    prepare_dagster_home(settings)
    if not args.verbose:
        logging.getLogger("mlflow").setLevel(logging.ERROR)  # pyfunc pickling and pip notices: --verbose shows them
    instance = DagsterInstance.get()
    specs = load_use_cases(settings.use_cases_dir)
    selected = args.use_case or list(specs)
    unknown = [u for u in selected if u not in specs]
    if unknown:
        print(f"unknown use case(s): {', '.join(unknown)}; known: {', '.join(specs)}", file=sys.stderr)
        return 2
    definitions = build_definitions(settings)
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO" if args.verbose else "WARNING"}}}}
    if args.rows:
        run_config["ops"] = {"sources": {"config": {"rows": args.rows}}}
    print(
        f"Ontos Pipeline demo: {len(selected)} use cases, state in {settings.home}, {concurrent_runs()} runs at a time"
    )
    settings.local_model_store().client().search_experiments(max_results=1)  # MLflow's tables, before the workers
    with RunPool(definitions, instance, concurrent_runs(), args.verbose) as pool:
        print("1/5 pipeline: data -> labels -> training sheet -> model -> evaluation -> gate -> endpoint", flush=True)
        finished = pool.run(
            [RunRequest(FULL_PIPELINE, name, run_config, {"ontos/command": "demo"}) for name in selected],
            _report_pipeline,
        )
        rows = [_summary_row(f.request.partition, f.result, f.seconds) for f in finished]
        models = [_model_row(f.request.partition, f.result) for f in finished]
        failed = sum(_pipeline_state(f.result) == "FAILED" for f in finished)
        print()
        print(
            format_table(
                [
                    "use case",
                    "items",
                    "sheet version",
                    "labelled",
                    "auto / pending / rejected / flagged",
                    "exported train / val / test",
                    "checks",
                    "PHI columns",
                    "seconds",
                ],
                rows,
            )
        )
        print()
        print(format_table(["use case", "model", "test metric", "baseline [95% CI]", "model [95% CI]", "gate"], models))
        serving, held_out = serve_traffic_and_monitor(settings, pool, [specs[n] for n in selected], run_config)
        print()
        print(
            format_table(
                [
                    "use case",
                    "served",
                    "requests",
                    "p95 ms (normal / drifted)",
                    "error rate",
                    "accuracy normal -> drifted",
                    "feedback",
                    "drifted inputs (normal window)",
                    "drifted inputs (drifted window)",
                    "alerts",
                ],
                serving,
            )
        )
        improved, retrain_failed = improve_loop(
            settings, pool, instance, [specs[n] for n in selected], held_out, run_config
        )
    failed += retrain_failed
    print()
    print(
        format_table(
            [
                "use case",
                "metric",
                "drifted items",
                "baseline",
                "first model",
                "retrained model",
                "change [95% CI]",
                "feedback used",
                "served",
                "tasks",
                "retrain",
            ],
            improved,
        )
    )
    print(
        f"\nRuns, materializations and checks are in the Dagster instance at {settings.dagster_home}; "
        "open it with `uv run ontos ui`.\nModels, runs and plots are in MLflow: `uv run mlflow ui "
        f"--backend-store-uri sqlite:///{settings.home / 'mlflow' / 'mlflow.db'}`.\nServe the champions with "
        "`uv run ontos serve`; open alerts: `uv run ontos alerts list`; annotation tasks: `uv run ontos tasks "
        "list`."
    )
    return 1 if failed else 0


def _pipeline_state(result) -> str:
    """ok, FAILED, or stopped at the promotion gate (a kept model: not an error)."""
    blocked = {e.step_key for e in result.get_step_failure_events()} == {GATE_STEP} and any(
        c.check_name == "promotion_gate" and not c.passed for c in result.get_asset_check_evaluations()
    )
    return "ok" if result.success else "stopped at the promotion gate" if blocked else "FAILED"


def _report_pipeline(finished: FinishedRun) -> None:
    print(
        f"  {finished.request.partition}: {_pipeline_state(finished.result)} (run {finished.result.run_id[:8]}, "
        f"{finished.seconds:.0f} s)",
        flush=True,
    )


def serve_traffic_and_monitor(
    settings: Settings, pool: RunPool, specs: list[UseCaseSpec], run_config: dict
) -> tuple[list[list[object]], dict]:
    """Serve every champion in a child process, send normal traffic, land the drifted batch and send half of it
    with feedback, monitor both windows. Returns the summary rows and, per use case, the drifted items held out
    (never sent, so never given feedback) for judging the retrain."""
    from ontos_pipeline.demo import traffic
    from ontos_pipeline.pipeline import MONITOR
    from ontos_pipeline.platform.model_store import CHAMPION
    from ontos_pipeline.platform.spark_session import get_spark

    store = settings.local_model_store()
    served = {s.name: store.version(s.name, CHAMPION) for s in specs}
    live = [s for s in specs if served[s.name] is not None]
    if not live:
        return [[s.name, "none", "-", "-", "-", "-", "-", "-", "-", "-"] for s in specs], {}
    print(
        f"\n2/5 serving {len(live)} endpoints (`ontos serve`): normal traffic, then the drifted batch lands in the "
        "source tables and half of it is sent with feedback",
        flush=True,
    )
    lakehouse, spark = settings.local_lakehouse(), get_spark()
    windows, results, held_out = {}, {}, {}
    with ServingProcess(settings, [s.serving.endpoint_name for s in live]) as serving:
        url, token = serving.url, serving.token
        for spec in live:
            t0 = datetime.now(UTC)
            normal = traffic.send(url, spec, traffic.items(spark, lakehouse, spec, "normal", TRAFFIC), 0.5, token=token)
            t1 = datetime.now(UTC)
            batch = traffic.items(spark, lakehouse, spec, "drifted", 2 * TRAFFIC)
            landed = traffic.land_batch(spark, lakehouse, spec, "drifted")
            sent, held_out[spec.name] = batch.iloc[: len(batch) // 2], batch.iloc[len(batch) // 2 :]
            drifted = traffic.send(url, spec, sent, DRIFTED_FEEDBACK, DRIFTED_FEEDBACK, seed=1, token=token)
            windows[spec.name], results[spec.name] = (t0, t1, datetime.now(UTC)), (normal, drifted)
            print(
                f"  {spec.name}: {normal.requests} normal + {drifted.requests} drifted requests ({landed} drifted "
                f"rows landed), accuracy {_pct(normal.accuracy)} -> {_pct(drifted.accuracy)}",
                flush=True,
            )
    print("\n3/5 monitoring reports (normal window, drifted window)", flush=True)
    requests_ = [
        RunRequest(
            MONITOR,
            name,
            {
                **run_config,
                "ops": {"monitoring_report": {"config": {"since": since.isoformat(), "until": until.isoformat()}}},
            },
            {"ontos/command": "demo"},
        )
        for name, (t0, t1, t2) in windows.items()
        for since, until in ((t0, t1), (t1, t2))
    ]
    reports: dict[str, list[dict]] = {}
    for finished in pool.run(requests_):
        reports.setdefault(finished.request.partition, []).append(_materialized(finished.result, "monitoring_report"))
    rows = []
    for spec in specs:
        if spec.name not in windows:
            rows.append([spec.name, "none (gate kept nothing to serve)", 0, "-", "-", "-", "-", "-", "-", "-"])
            continue
        normal_report, drifted_report = reports[spec.name]
        normal, drifted = results[spec.name]
        feedback = sum(normal.feedback.values()) + sum(drifted.feedback.values())
        rows.append(
            [
                spec.name,
                f"v{served[spec.name].version}",
                normal_report.get("requests", 0) + drifted_report.get("requests", 0),
                f"{_ms(normal_report.get('latency_p95'))} / {_ms(drifted_report.get('latency_p95'))}",
                _rate(drifted_report.get("error_rate")),
                f"{_pct(normal.accuracy)} -> {_pct(drifted.accuracy)}",
                feedback,
                normal_report.get("drifted", "-"),
                drifted_report.get("drifted", "-"),
                sum(r.get("alerts_opened", 0) for r in (normal_report, drifted_report)),
            ]
        )
        print(f"  {spec.name}: drifted inputs {drifted_report.get('drifted', '-')}", flush=True)
    return rows, held_out


class ServingProcess:
    """`ontos serve` as a child process on a free port, with a bearer token of its own (`token`, named `demo`, made
    anew each time); leaving the block stops it gracefully (log flushed)."""

    def __init__(self, settings: Settings, endpoints: list[str], timeout: float = 300.0):
        self.settings, self.endpoints, self.timeout = settings, endpoints, timeout
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.token = ""

    def __enter__(self) -> ServingProcess:
        from ontos_pipeline.deploy.serving.auth import TokenStore

        self.token = TokenStore(self.settings.home).create("demo", by="ontos demo", replace=True)
        log = self.settings.home / "serving" / "demo-serve.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ONTOS_HOME": str(self.settings.home)}
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ontos_pipeline.cli", "serve", "--port", str(self.port), "--poll-seconds", "1"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`ontos serve` exited with {self.process.returncode}; see {log}")
            try:
                states = requests.get(f"{self.url}/health", timeout=2).json()["endpoints"]
                if all(states.get(e) == "READY" for e in self.endpoints):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(
            f"`ontos serve` did not serve {', '.join(self.endpoints)} within {self.timeout:.0f} s; see {log}"
        )

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # graceful: finishes requests, flushes the inference log
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _rate(value) -> str:
    return f"{value:.1%}" if isinstance(value, float | int) else str(value or "-")


def _ms(value) -> str:
    return str(value or "-").removesuffix(" ms")


def _summary_row(name: str, result, seconds: float) -> list[object]:
    sheet, labels, qa, export = (
        _materialized(result, node) for node in ("sheet", "canonical_labels", "training_sheet", "training_export")
    )
    status = qa.get("by_status", {})
    splits = export.get("rows_per_split", {})
    checks = result.get_asset_check_evaluations()
    failed = [c.check_name for c in checks if not c.passed]
    return [
        name,
        sheet.get("dagster/row_count", "-"),
        str(sheet.get("version", "-"))[:12],
        f"{labels['coverage']:.1%}" if "coverage" in labels else "-",
        " / ".join(str(status.get(s, 0)) for s in ("auto_approved", "pending", "rejected", "flagged")) if qa else "-",
        " / ".join(str(splits.get(s, 0)) for s in ("train", "val", "test")) if export else "-",
        f"{len(checks) - len(failed)}/{len(checks)}" + (f" ({', '.join(failed)})" if failed else ""),
        sheet.get("phi_columns", "-"),
        f"{seconds:.1f}",
    ]


def _materialized(result, node: str) -> dict:
    mats = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mats[-1].metadata.items()} if mats else {}


def _model_row(name: str, result) -> list[object]:
    """Model summary of a demo run: headline test metric of baseline and model with intervals, gate, endpoint."""
    trained, evaluation = _materialized(result, "trained_model"), _materialized(result, "model_evaluation")
    if not evaluation:
        return [name, "-", "-", "-", "-", "not evaluated"]
    metric = next(k.removesuffix(" (95% CI)") for k in evaluation if k.endswith(" (95% CI)"))
    gate = next((c for c in result.get_asset_check_evaluations() if c.check_name == "promotion_gate"), None)
    return [
        name,
        f"v{trained.get('model_version', '?')} {trained.get('family', '')}",
        metric,
        evaluation.get(f"baseline {metric}", "-"),
        evaluation[f"{metric} (95% CI)"],
        "-" if gate is None else "passed" if gate.passed else "FAILED",
    ]
