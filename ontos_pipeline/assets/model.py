"""Assets of the `train` group, part 2: the trained model, its evaluation and the promotion gate."""

import json
import tempfile
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)
from pyspark.sql import functions as F

from ontos_pipeline.assets.common import export_directory, published_sheet
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.mlflow import LocalMlflowResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.resources.trainer import LocalTrainerResource
from ontos_pipeline.stages import evaluation as evaluation_stage
from ontos_pipeline.stages.deploy import CHALLENGER, CHAMPION
from ontos_pipeline.stages.export import MANIFEST
from ontos_pipeline.stages.improve import feedback_items, new_items
from ontos_pipeline.stages.qa_pairs import training_sheet_version
from ontos_pipeline.stages.template import current_template
from ontos_pipeline.stages.train import Lineage, log_training, record_training_run
from ontos_pipeline.stages.training_data import cross_split_leaks, model_rows, split_frame, weight_items
from ontos_pipeline.stages.training_sheet import QA
from ontos_pipeline.steps import Check, check_specs, step
from ontos_pipeline.trainer.local import TrainingData


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ci(result: dict) -> str:
    low, high = result["ci"]
    return f"{_fmt(result['headline'])} [{_fmt(low)}, {_fmt(high)}]"


def _md_table(rows: list[dict], columns: list[str]) -> MetadataValue:
    def cell(v) -> str:
        text = json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")[:120]

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return MetadataValue.md("\n".join(lines) if rows else "(none)")


def build_model_assets(partitions: PartitionsDefinition) -> list:
    @asset(name="trained_model", group_name="train", partitions_def=partitions, deps=["training_export"],
           kinds={"mlflow", "scikitlearn"},
           description="Baseline and model families fitted on the dual-gated training rows; the best on validation "
                       "is registered in MLflow (one model per use case) with the `challenger` alias, a "
                       "reproducibility pack and a lineage row in training_runs.")
    @step("trained_model")
    def trained_model(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                      use_cases: UseCasesResource, mlflow_store: LocalMlflowResource,
                      trainer: LocalTrainerResource) -> MaterializeResult:
        spec, session, lh = use_cases.get(context.partition_key), spark.session(), lakehouse.get()
        version = training_sheet_version(lh, spec.training_sheet_id)
        export_dir = export_directory(lh, spec, version or "none")
        if version is None or not (export_dir / MANIFEST).exists():
            raise RuntimeError(f"no training export of the current training sheet of {spec.name}; materialize "
                               "training_sheet and training_export first")
        snapshot, template = published_sheet(session, lh, spec), current_template(lh, spec.name)
        qa_version = lh.version(QA)
        qa = lh.read(session, QA, version=qa_version).filter(F.col("training_sheet_id") == spec.training_sheet_id)
        rows = model_rows(session, lh, spec, qa, snapshot.table, "training")
        fed = feedback_items(session, lh, spec, snapshot.sheet_id)
        train = split_frame(rows, "train", trainer.max_train_rows)
        data = TrainingData(weight_items(train, fed, spec.retrain.feedback_weight),
                            split_frame(rows, "val", trainer.max_train_rows))
        leaks = cross_split_leaks(qa)
        backend = trainer.get(spec.training.seed)
        outcome = backend.train(spec, template, data)
        lineage = Lineage(spec.training_sheet_id, version, qa_version, snapshot.version, snapshot.table,
                          template.version, lh.version("canonical_labels"), str(export_dir))
        store = mlflow_store.get()
        trained = log_training(store, spec, template, outcome, lineage, data.train, len(data.val),
                               f"trained_model-{context.run_id[:8]}", context.run_id, backend.name,
                               spec.training.seed, lh.cli_env())
        record_training_run(lh, spec, trained, lineage, context.run_id)
        candidates = [{"family": c.family, f"val {outcome.metric}": round(c.headline, 4),
                       "fit seconds": round(c.seconds, 2), "params": c.params} for c in outcome.candidates]
        return MaterializeResult(data_version=DataVersion(f"{trained.model_name}/{trained.version}"), metadata={
            "model": f"{trained.model_name} version {trained.version} (alias {CHALLENGER})",
            "model_version": trained.version, "mlflow_run_id": trained.run_id, "family": trained.family,
            f"val_{outcome.metric}": trained.validation, f"baseline_val_{outcome.metric}": trained.baseline_validation,
            "candidates": _md_table(candidates, list(candidates[0])),
            "train_rows": len(train), "val_rows": len(data.val),
            "feedback_items_in_train": int(train["item_ref"].isin(fed).sum()),
            "feedback_weight": spec.retrain.feedback_weight, "leaks": MetadataValue.json(leaks),
            "search": MetadataValue.json(outcome.search or {}),
            "rebuild_training_data": trained.pack["command"],
            "mlflow_ui": f"uv run mlflow ui --backend-store-uri {store.tracking_uri}"})

    def promotion_gate(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                       use_cases: UseCasesResource, mlflow_store: LocalMlflowResource) -> AssetCheckResult:
        spec, store = use_cases.get(context.partition_key), mlflow_store.get()
        challenger = store.version(spec.name, CHALLENGER)
        stored = challenger and evaluation_stage.stored_evaluation(lakehouse.get(), spec.name,
                                                                   challenger.version)
        if not stored:
            return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                    description=f"no evaluation of the {CHALLENGER} of {spec.name}; materialize "
                                                "model_evaluation first")
        rules = json.loads(stored["gate_details"])
        return AssetCheckResult(
            passed=bool(stored["gate_passed"]), severity=AssetCheckSeverity.ERROR,
            description=evaluation_stage.GateResult.from_rules(bool(stored["gate_passed"]), rules).summary(),
            metadata={"model_version": stored["model_version"], "rules": MetadataValue.json(rules),
                      "champion_version": stored["champion_version"] or "none"})

    model_evaluation_checks = [
        Check("promotion_gate",
              "the challenger beats the baseline, meets the spec's minimum and is not worse than the champion "
              "beyond the tolerance", promotion_gate),
    ]

    @asset(name="model_evaluation", check_specs=check_specs("model_evaluation", model_evaluation_checks, partitions),
           group_name="train", partitions_def=partitions, deps=[trained_model],
           kinds={"mlflow"},
           description="The challenger, its baseline and the champion (if any) on the same held-out test rows: "
                       "metrics with a bootstrap interval, worst slices and failures, plots, and the promotion gate.")
    @step("model_evaluation", checks=model_evaluation_checks)
    def model_evaluation(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                         use_cases: UseCasesResource, mlflow_store: LocalMlflowResource,
                         trainer: LocalTrainerResource) -> MaterializeResult:
        spec, session, lh, store = (use_cases.get(context.partition_key), spark.session(), lakehouse.get(),
                                    mlflow_store.get())
        challenger = store.version(spec.name, CHALLENGER)
        if challenger is None:
            raise RuntimeError(f"no {CHALLENGER} model for {spec.name}; materialize trained_model first")
        baseline_run = store.client().get_run(challenger.run_id).data.tags["ontos.baseline_run_id"]
        champion = store.version(spec.name, CHAMPION)
        if champion is not None and champion.version == challenger.version:
            champion = None  # the challenger is already the champion: nothing to compare against
        qa = lh.read(session, QA).filter(F.col("training_sheet_id") == spec.training_sheet_id)
        sheet = published_sheet(session, lh, spec)
        test = split_frame(model_rows(session, lh, spec, qa, sheet.table,
                                      "evaluation"), "test", trainer.max_eval_rows)
        with tempfile.TemporaryDirectory() as tmp:
            result = evaluation_stage.evaluate(
                spec, test, store.load(store.version_uri(spec.name, challenger.version)),
                store.load(f"runs:/{baseline_run}/model"),
                None if champion is None else store.load(store.version_uri(spec.name, champion.version)),
                None if champion is None else champion.version, Path(tmp), spec.training.seed,
                set() if champion is None else new_items(session, lh, spec, champion.version, sheet.table,
                                                         test["item_ref"].tolist()))
            plots = evaluation_stage.log_evaluation(store, challenger.run_id, result, Path(tmp))
        evaluation_stage.record_evaluation(lh, result, store.model_name(spec.name), challenger.version,
                                           challenger.run_id, context.run_id)
        store.client().set_model_version_tag(store.model_name(spec.name), challenger.version, "gate",
                                             "passed" if result.gate.passed else "failed")
        m = result.metric
        return MaterializeResult(metadata={
            "model_version": challenger.version, "test_rows": result.rows,
            f"{m} (95% CI)": _ci(result.challenger), f"baseline {m}": _ci(result.baseline),
            f"champion {m}": _ci(result.champion) if result.champion else "no champion yet",
            "champion_version": result.champion_version or "none",
            "gate": ("PASSED: " if result.gate.passed else "FAILED: ") + result.gate.summary(),
            "gate_passed": result.gate.passed,
            "metrics": MetadataValue.json({k: v for k, v in result.challenger.items()
                                           if k not in ("confusion_matrix",)}),
            "worst_slices": _md_table(result.slices, ["column", "value", "support", "score", "delta"]),
            "worst_failures": _md_table(result.failures, ["item_ref", "expected", "predicted", "confidence"]),
            **{f"plot_{name}": MetadataValue.path(path) for name, path in plots.items()},
            "mlflow_run_id": challenger.run_id})

    return [trained_model, model_evaluation]

