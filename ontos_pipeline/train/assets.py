"""TRAIN assets: the fine-tuning export, the trained model, its evaluation and the promotion gate."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
)
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import published_sheet
from ontos_pipeline.generate.qa_pairs import training_sheet_version
from ontos_pipeline.generate.template import current_template
from ontos_pipeline.generate.training_sheet import QA, current_training_sheet
from ontos_pipeline.label.labels import prohibited_for_training
from ontos_pipeline.metadata import check_result, first_values, md_table
from ontos_pipeline.notify.messages import gate_notice, kept_key
from ontos_pipeline.platform.checks import CheckOutcome
from ontos_pipeline.platform.model_store import CHALLENGER, CHAMPION
from ontos_pipeline.resources.base import (
    LakehouseResource,
    ModelStoreResource,
    NotifierResource,
    SparkResource,
    TrainerResource,
    UseCasesResource,
)
from ontos_pipeline.specs import ITEM_KEY
from ontos_pipeline.steps import Check, Step, step_inputs
from ontos_pipeline.train import evaluation as evaluation_stage
from ontos_pipeline.train import export as export_stage
from ontos_pipeline.train.tracking import Lineage, log_training, record_training_run
from ontos_pipeline.train.trainer.local import TrainingData
from ontos_pipeline.train.training_data import (
    cap_confirmations,
    cross_split_leaks,
    export_rows,
    feedback_items,
    model_rows,
    new_items,
    split_frame,
    weight_items,
)


# -- training_export -------------------------------------------------------------------------------------------
def training_export(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    version = training_sheet_version(lh, spec.training_sheet_id)
    if version is None:
        raise RuntimeError(f"no training sheet for {spec.name}; materialize training_sheet first")
    qa = export_rows(
        session, lh, spec, current_training_sheet(session, lh, spec.training_sheet_id), published_sheet(lh, spec).table
    )
    manifest = export_stage.export_training_data(session, qa, export_stage.export_directory(lh, spec, version))
    return MaterializeResult(
        data_version=DataVersion(version),
        metadata={
            "directory": MetadataValue.path(manifest.directory),
            "training_sheet_version": version,
            "rows_per_split": MetadataValue.json(manifest.rows_per_split),
            "dagster/row_count": sum(manifest.rows_per_split.values()),
            "manifest": MetadataValue.json(json.loads(manifest.to_json())),
        },
    )


def _exported(context, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource):
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    _, directory = export_stage.current_export(lh, spec)
    return spec, session, lh, directory


def export_excludes_prohibited(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    spec, session, lh, directory = _exported(context, spark, lakehouse, use_cases)
    index = session.read.json(str(directory / export_stage.INDEX))
    qa = current_training_sheet(session, lh, spec.training_sheet_id)
    snapshot = published_sheet(lh, spec)  # the rows and the current sheet: consent revoked since counts
    prohibited = prohibited_for_training(qa, lh.read(session, snapshot.table), spec, snapshot)
    if "item_ref" in index.columns:
        marked = prohibited.select(ITEM_KEY, F.lit(True).alias("_prohibited")).join(
            index.select(ITEM_KEY, F.lit(True).alias("_exported")), ITEM_KEY, "full"
        )
        leaked = F.col("_prohibited") & F.col("_exported")
        counts = marked.agg(
            F.count("_prohibited").alias("held"),
            F.sum(leaked.cast("long")).alias("leaked"),
            first_values(F.when(leaked, F.col(ITEM_KEY))).alias("examples"),
        ).first()
        n, held, examples = int(counts["leaked"] or 0), int(counts["held"]), list(counts["examples"] or [])
    else:  # an export without item refs cannot leak a known item
        n, held, examples = 0, prohibited.count(), []
    return check_result(
        CheckOutcome(
            n == 0,
            f"none of the exported items is prohibited for training ({held} prohibited items held back)"
            if n == 0
            else f"{n} exported items are prohibited for training, e.g. {examples}",
            {"leaked": n},
        )
    )


def export_files_valid(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, use_cases: UseCasesResource
) -> AssetCheckResult:
    _, session, _, directory = _exported(context, spark, lakehouse, use_cases)
    invalid = export_stage.validate_export(session, directory)
    bad = {k: v for k, v in invalid.items() if v}
    return check_result(
        CheckOutcome(
            not bad,
            f"{len(invalid)} files, every line valid" if not bad else f"invalid lines: {bad}",
            {"invalid_lines": invalid},
        )
    )


# -- trained_model ---------------------------------------------------------------------------------------------
def trained_model(
    context: AssetExecutionContext,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
    trainer: TrainerResource,
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    version, export_dir = export_stage.current_export(lh, spec)
    snapshot, template = published_sheet(lh, spec), current_template(lh, spec.name)
    qa_version = lh.version(QA)
    qa = lh.read(session, QA, version=qa_version).filter(F.col("training_sheet_id") == spec.training_sheet_id)
    rows = model_rows(session, lh, spec, qa, snapshot.table, "training")
    fed = feedback_items(session, lh, spec, snapshot.sheet_id)
    train = cap_confirmations(
        split_frame(rows, "train", trainer.max_train_rows), fed.confirmed, spec.retrain.max_confirmation_share
    )
    data = TrainingData(
        weight_items(train, fed.corrected, spec.retrain.feedback_weight),
        split_frame(rows, "val", trainer.max_train_rows),
    )
    leaks = cross_split_leaks(qa)
    backend = trainer.get(spec.training.seed)
    outcome = backend.train(spec, template, data)
    lineage = Lineage(
        spec.training_sheet_id,
        version,
        qa_version,
        snapshot.version,
        snapshot.table,
        template.version,
        lh.version("canonical_labels"),
        str(export_dir),
    )
    store = mlflow_store.get()
    trained = log_training(
        store,
        spec,
        template,
        outcome,
        lineage,
        data.train,
        len(data.val),
        f"trained_model-{context.run_id[:8]}",
        context.run_id,
        backend.name,
        spec.training.seed,
        lh.cli_env(),
    )
    record_training_run(lh, spec, trained, lineage, context.run_id)
    candidates = [
        {
            "family": c.family,
            f"val {outcome.metric}": round(c.headline, 4),
            "fit seconds": round(c.seconds, 2),
            "params": c.params,
        }
        for c in outcome.candidates
    ]
    return MaterializeResult(
        data_version=DataVersion(f"{trained.model_name}/{trained.version}"),
        metadata={
            "model": f"{trained.model_name} version {trained.version} (alias {CHALLENGER})",
            "model_version": trained.version,
            "mlflow_run_id": trained.run_id,
            "family": trained.family,
            f"val_{outcome.metric}": trained.validation,
            f"baseline_val_{outcome.metric}": trained.baseline_validation,
            "candidates": md_table(candidates, list(candidates[0])),
            "train_rows": len(train),
            "val_rows": len(data.val),
            "corrected_items_in_train": int(train["item_ref"].isin(fed.corrected).sum()),
            "confirmed_items_in_train": int(train["item_ref"].isin(fed.confirmed).sum()),
            "feedback_weight": spec.retrain.feedback_weight,
            "leaks": MetadataValue.json(leaks),
            "search": MetadataValue.json(outcome.search or {}),
            "rebuild_training_data": trained.pack["command"],
            "mlflow_ui": f"uv run mlflow ui --backend-store-uri {store.tracking_uri}",
        },
    )


# -- model_evaluation ------------------------------------------------------------------------------------------
def _notify_kept(context, notifier: NotifierResource, spec, store, version, gate) -> None:
    """The gate decision "champion kept", with the rules' numbers (serving_endpoint tells it under the same key)."""
    champion = store.version(spec.name, CHAMPION)
    served = str(champion.version) if champion else None
    reason = f"gate failed for version {version}: {gate.summary()}" + (
        "" if served else "; nothing is served until a version passes"
    )
    notice = gate_notice(
        notifier.dagster_url,
        context.run_id,
        kept_key(spec.name, version),
        use_case=spec.name,
        endpoint=spec.serving.endpoint_name,
        decision="keep",
        served_version=served,
        previous_version=served,
        reason=reason,
        rules=[asdict(r) for r in gate.rules],
    )
    notifier.get(context.log).notify(spec.notifications, notice)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ci(result: dict) -> str:
    low, high = result["ci"]
    return f"{_fmt(result['headline'])} [{_fmt(low)}, {_fmt(high)}]"


def model_evaluation(
    context: AssetExecutionContext,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
    trainer: TrainerResource,
    notifier: NotifierResource,
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    store = mlflow_store.get()
    challenger = store.version(spec.name, CHALLENGER)
    if challenger is None:
        raise RuntimeError(f"no {CHALLENGER} model for {spec.name}; materialize trained_model first")
    baseline_run = store.client().get_run(challenger.run_id).data.tags["ontos.baseline_run_id"]
    champion = store.version(spec.name, CHAMPION)
    if champion is not None and champion.version == challenger.version:
        champion = None  # the challenger is already the champion: nothing to compare against
    qa = lh.read(session, QA).filter(F.col("training_sheet_id") == spec.training_sheet_id)
    sheet = published_sheet(lh, spec)
    test = split_frame(model_rows(session, lh, spec, qa, sheet.table, "evaluation"), "test", trainer.max_eval_rows)
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluation_stage.evaluate(
            spec,
            test,
            store.load(store.version_uri(spec.name, challenger.version)),
            store.load(f"runs:/{baseline_run}/model"),
            None if champion is None else store.load(store.version_uri(spec.name, champion.version)),
            None if champion is None else champion.version,
            Path(tmp),
            spec.training.seed,
            set()
            if champion is None
            else new_items(session, lh, spec, champion.version, sheet.table, test["item_ref"].tolist()),
        )
        plots = evaluation_stage.log_evaluation(store, challenger.run_id, result, Path(tmp))
    evaluation_stage.record_evaluation(
        lh, result, store.model_name(spec.name), challenger.version, challenger.run_id, context.run_id
    )
    store.client().set_model_version_tag(
        store.model_name(spec.name), challenger.version, "gate", "passed" if result.gate.passed else "failed"
    )
    if not result.gate.passed:  # the blocking gate stops a full run here: the champion stays, told now
        _notify_kept(context, notifier, spec, store, challenger.version, result.gate)
    m = result.metric
    return MaterializeResult(
        metadata={
            "model_version": challenger.version,
            "test_rows": result.rows,
            f"{m} (95% CI)": _ci(result.challenger),
            f"baseline {m}": _ci(result.baseline),
            f"champion {m}": _ci(result.champion) if result.champion else "no champion yet",
            "champion_version": result.champion_version or "none",
            "gate": ("PASSED: " if result.gate.passed else "FAILED: ") + result.gate.summary(),
            "gate_passed": result.gate.passed,
            "metrics": MetadataValue.json(
                {k: v for k, v in result.challenger.items() if k not in ("confusion_matrix",)}
            ),
            "worst_slices": md_table(result.slices, ["column", "value", "support", "score", "delta"]),
            "worst_failures": md_table(result.failures, ["item_ref", "expected", "predicted", "confidence"]),
            **{f"plot_{name}": MetadataValue.path(path) for name, path in plots.items()},
            "mlflow_run_id": challenger.run_id,
        }
    )


def promotion_gate(
    context: AssetExecutionContext,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
) -> AssetCheckResult:
    spec, store = use_cases.get(context.partition_key), mlflow_store.get()
    challenger = store.version(spec.name, CHALLENGER)
    stored = challenger and evaluation_stage.stored_evaluation(lakehouse.get(), spec.name, challenger.version)
    if not stored:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description=f"no evaluation of the {CHALLENGER} of {spec.name}; materialize model_evaluation first",
        )
    rules = json.loads(stored["gate_details"])
    return AssetCheckResult(
        passed=bool(stored["gate_passed"]),
        severity=AssetCheckSeverity.ERROR,
        description=evaluation_stage.GateResult.from_rules(bool(stored["gate_passed"]), rules).summary(),
        metadata={
            "model_version": stored["model_version"],
            "rules": MetadataValue.json(rules),
            "champion_version": stored["champion_version"] or "none",
        },
    )


TRAINING_EXPORT = Step(
    "training_export",
    training_export,
    group="train",
    deps=("training_sheet",),
    kinds=frozenset({"spark", "json"}),
    description="Fine-tuning JSONL per split (chat and instruction formats; images as content parts for multimodal "
    "use cases) of the rows that pass the dual gate, with a manifest of checksums.",
    checks=(
        Check(
            "export_excludes_prohibited",
            "no exported item has a label or sheet constraint prohibiting training (PHI)",
            export_excludes_prohibited,
        ),
        Check("export_files_valid", "every line of every export file validates against its format", export_files_valid),
    ),
)

TRAINED_MODEL = Step(
    "trained_model",
    trained_model,
    group="train",
    deps=("training_export",),
    kinds=frozenset({"mlflow", "scikitlearn"}),
    description="Baseline and model families fitted on the dual-gated training rows; the best on validation is "
    "registered in MLflow (one model per use case) with the `challenger` alias, a reproducibility pack "
    "and a lineage row in training_runs.",
)

MODEL_EVALUATION = Step(
    "model_evaluation",
    model_evaluation,
    group="train",
    deps=("trained_model",),
    kinds=frozenset({"mlflow"}),
    description="The challenger, its baseline and the champion (if any) on the same held-out test rows: metrics "
    "with a bootstrap interval, worst slices and failures, plots, and the promotion gate.",
    checks=(
        Check(
            "promotion_gate",
            "the challenger beats the baseline, meets the spec's minimum and is not worse than the champion "
            "beyond noise (the paired bootstrap interval of the difference), on all test rows and on the newest",
            promotion_gate,
        ),
    ),
)
