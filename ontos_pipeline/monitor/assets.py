"""MONITOR assets: the inference log (written by the serving process) and monitoring reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
)

from ontos_pipeline.deploy import ab_test
from ontos_pipeline.metadata import md_counts, md_table
from ontos_pipeline.monitor import monitoring as monitoring_stage
from ontos_pipeline.monitor.alerts import raise_alerts
from ontos_pipeline.notify.messages import alerts_notice
from ontos_pipeline.platform.model_store import AB_CHALLENGER, CHAMPION
from ontos_pipeline.resources.base import (
    LakehouseResource,
    ModelStoreResource,
    NotifierResource,
    SparkResource,
    UseCasesResource,
)
from ontos_pipeline.steps import Check, Step, step_inputs
from ontos_pipeline.train.tracking import PACK

INFERENCE_LOG_ASSET = AssetSpec(
    "inference_log",
    group_name="monitor",
    deps=["serving_endpoint"],
    kinds={"delta"},
    description="Every request the serving process answered (`ontos serve`), failures included: the local twin of "
    "Databricks inference tables. Written by the serving process, not by a Dagster run.",
)


class MonitoringConfig(Config):
    """The time window of a report (ISO 8601); default: the spec's `monitoring.window_minutes` until now."""

    since: str | None = None
    until: str | None = None


def _window(config: MonitoringConfig, minutes: int) -> monitoring_stage.Window:
    def parse(text: str, field: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"monitoring_report config {field}={text!r} is not an ISO 8601 time") from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    end = parse(config.until, "until") if config.until else datetime.now(UTC)
    start = parse(config.since, "since") if config.since else end - timedelta(minutes=minutes)
    if start >= end:
        raise ValueError(
            f"monitoring_report window is empty: since {start.isoformat()} is not before until {end.isoformat()}"
        )
    return monitoring_stage.Window(start, end)


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def monitoring_thresholds(
    context: AssetExecutionContext, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec = use_cases.get(context.partition_key)
    report = monitoring_stage.latest_report(lakehouse.get(), spec, context.run_id)  # the one this step wrote
    if report is None:
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.WARN, description=f"no monitoring report for {spec.name} yet"
        )
    found = monitoring_stage.breaches(report, spec)
    return AssetCheckResult(
        passed=not found,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(b.message for b in found) or "all metrics within thresholds",
        metadata={
            "report_id": report.report_id,
            "breaches": MetadataValue.json(
                [{"metric": b.metric, "value": b.value, "threshold": b.threshold} for b in found]
            ),
        },
    )


def monitoring_report(
    context: AssetExecutionContext,
    config: MonitoringConfig,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
    notifier: NotifierResource,
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    store = mlflow_store.get()
    window = _window(config, spec.monitoring.window_minutes)
    champion = store.version(spec.name, CHAMPION)
    reference = None  # nothing served yet: operational metrics only (requests got 503s)
    if champion is not None:
        pack = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{PACK}")
        reference = monitoring_stage.training_reference(session, lh, spec, pack)
    arm = store.version(spec.name, AB_CHALLENGER)
    report = monitoring_stage.monitor(
        session,
        lh,
        spec,
        window,
        reference,
        context.run_id,
        champion=str(champion.version) if champion else None,
        challenger=str(arm.version) if arm else None,
    )
    lh.append_records(monitoring_stage.REPORTS, [report.record()])
    breaches = monitoring_stage.breaches(report, spec)
    opened = raise_alerts(lh, spec.name, breaches, report.report_id)
    if opened:  # a breach that persists opens no alert, so it is told once
        notice = alerts_notice(notifier.dagster_url, context.run_id, spec.name, opened)
        notifier.get(context.log).notify(spec.notifications, notice)
    drift_rows = [d.record() for d in report.drift]
    return MaterializeResult(
        metadata={
            "report_id": report.report_id,
            "endpoint": report.endpoint_name,
            "served_version": str(champion.version) if champion else "none (no champion)",
            "window": f"{window.start.isoformat(timespec='seconds')} .. {window.end.isoformat(timespec='seconds')}",
            "requests": report.request_count,
            "records": report.records,
            "error_rate": report.error_rate if report.error_rate is not None else "n/a",
            "status_codes": md_counts(report.status_counts),
            "latency_p50": _ms(report.latency_ms["p50"]),
            "latency_p95": _ms(report.latency_ms["p95"]),
            "latency_p99": _ms(report.latency_ms["p99"]),
            "positive_feedback_rate": report.positive_feedback_rate
            if report.positive_feedback_rate is not None
            else "n/a",
            "accuracy": report.accuracy if report.accuracy is not None else "n/a",
            "feedback_judged": report.feedback_count,
            **_number_feedback(report.number_feedback),
            "response_distribution": MetadataValue.json(report.response_distribution),
            "drifted": ", ".join(report.drifted) or "none",
            "drift": _drift_table(drift_rows)
            if drift_rows
            else MetadataValue.md(
                "not assessed: no champion, so no training rows to compare with"
                if reference is None
                else f"not assessed: {report.records} records < min_rows {spec.monitoring.min_rows}"
            ),
            "breaches": MetadataValue.json([b.message for b in breaches]),
            "alerts_opened": len(opened),
            **_ab_metadata(report),
        }
    )


def _ab_metadata(report: monitoring_stage.MonitoringReport) -> dict:
    """The arms of the window when more than one model version answered (nothing otherwise)."""
    comparison = report.comparison
    if comparison is None:
        return {}
    return {
        "ab_test": md_table(ab_test.comparison_rows(comparison), ab_test.TABLE_COLUMNS),
        "ab_verdict": comparison.verdict,
        "ab_versions": MetadataValue.json({a["version"]: a["requests"] for a in report.ab_test["arms"]}),
    }


def _number_feedback(scores: dict) -> dict:
    """Metadata of number answers scored by error (nothing for other response kinds)."""
    if not scores:
        return {}
    out = {"feedback_corrections": scores["corrections"]}
    for key in ("mae", "tolerance", "within_tolerance"):
        out[f"feedback_{key}"] = "n/a" if scores[key] is None else scores[key]
    return out


def _drift_table(rows: list[dict]) -> MetadataValue:
    return md_table(
        [
            {
                **r,
                "psi": f"{r['psi']:.3f}",
                "statistic": f"{r['statistic']:.3f}",
                "p_value": f"{r['p_value']:.3g}",
                "drifted": "**yes**" if r["drifted"] else "no",
            }
            for r in rows
        ],
        ["column", "kind", "psi", "test", "statistic", "p_value", "drifted"],
    )


MONITORING_REPORT = Step(
    "monitoring_report",
    monitoring_report,
    group="monitor",
    deps=("serving_endpoint", "inference_log"),
    kinds=frozenset({"spark", "delta"}),
    config=MonitoringConfig,
    description="Requests, error rate, latency percentiles, response distribution, feedback rate and accuracy, and "
    "drift of every input feature and of the predictions against the served model's training rows, for "
    "one time window; breaches open alerts.",
    checks=(
        Check(
            "monitoring_thresholds",
            "no drift, error rate, latency, accuracy or feedback metric beyond the spec's thresholds in the "
            "report of this materialization",
            monitoring_thresholds,
            blocking=False,
        ),
    ),
)
