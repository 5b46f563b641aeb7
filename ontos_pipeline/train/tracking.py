"""TRAIN stage: fit the candidates, log them to MLflow, register the winner as `challenger`, record lineage.

One MLflow run per training (the parent), one child run per candidate family (the baseline's child also holds its
pyfunc, for the evaluation to compare against). The parent holds the winning pyfunc (signature and input example
of item columns), the reproducibility pack and the search summary; the registered version gets the `challenger`
alias. A `training_runs` row links model version, training sheet, sheet, template and label snapshot.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from ontos_pipeline.generate.template import CompiledTemplate
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import CHALLENGER, ModelStore
from ontos_pipeline.specs import UseCaseSpec
from ontos_pipeline.train.export import ExportManifest
from ontos_pipeline.train.pyfunc import OntosPyfunc
from ontos_pipeline.train.trainer.local import CandidateRun, TrainingOutcome
from ontos_pipeline.train.trainer.models import ResponseModel

RUNS_TABLE = tables.TRAINING_RUNS
PACK = "reproducibility/pack.json"
PACKAGES = (
    "ontos-pipeline",
    "dagster",
    "pyspark",
    "mlflow",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "optuna",
    "deltalake",
    "jinja2",
    "pillow",
)
EXAMPLE_ROWS = 3


@dataclass(frozen=True)
class Lineage:
    """The data versions a model is trained on."""

    training_sheet_id: str
    training_sheet_version: str
    qa_table_version: int  # Delta version of qa_pairs holding that training sheet version
    sheet_version: str
    sheet_table: str
    template_version: str
    label_snapshot_version: int | None  # Delta version of canonical_labels
    export_directory: str

    def export_checksums(self) -> dict[str, str]:
        return ExportManifest.read(self.export_directory).checksums()


@dataclass(frozen=True)
class TrainedModel:
    model_name: str
    version: str
    run_id: str
    baseline_run_id: str
    family: str
    metric: str
    validation: float
    baseline_validation: float
    pack: dict


def git_sha() -> str | None:
    """The commit of the checked-out source (with "-dirty" for local changes), None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


def reproducibility_pack(
    spec: UseCaseSpec,
    template: CompiledTemplate,
    lineage: Lineage,
    outcome: TrainingOutcome,
    trainer: str,
    seed: int,
    cli_env: Mapping[str, str],
    run_id: str,
) -> dict:
    """Everything needed to rebuild the training data byte for byte and to retrain the same way."""
    out = f"rebuilt-{spec.name}-{run_id[:8]}"
    return {
        "use_case": spec.name,
        "spec": {"file": Path(spec.path).name, "text": Path(spec.path).read_text(encoding="utf-8")},
        "template": {
            "name": template.name,
            "version": template.version,
            "system_prompt": template.system_prompt,
            "prompt": template.prompt,
            "response_schema": template.response_schema,
            "variables": template.variables,
        },
        "data": {
            "training_sheet_id": lineage.training_sheet_id,
            "training_sheet_version": lineage.training_sheet_version,
            "qa_pairs_table_version": lineage.qa_table_version,
            "sheet_version": lineage.sheet_version,
            "sheet_table": lineage.sheet_table,
            "label_snapshot_version": lineage.label_snapshot_version,
        },
        # the export folder relative to the files folder (exports/<use case>/<version>): a moved home keeps it true
        "export": {
            "directory": "/".join(Path(lineage.export_directory).parts[-3:]),
            "sha256": lineage.export_checksums(),
        },
        "trainer": {
            "name": trainer,
            "seed": seed,
            "metric": outcome.metric,
            "winner": outcome.best.family,
            "winner_params": outcome.best.params,
            "search": outcome.search,
            "candidates": [c.family for c in outcome.candidates],
        },
        "environment": environment(),
        "git_sha": git_sha(),
        "mlflow_run_id": run_id,
        # run with ONTOS_HOME at the home the model lives in (wherever it has moved), the other variables as here
        "command": "".join(f"{k}={shlex.quote(v)} " for k, v in cli_env.items() if k != "ONTOS_HOME")
        + f"uv run ontos rebuild-training-data --run-id {run_id} --out {out}",
    }


def _numeric(metrics: dict, prefix: str) -> dict[str, float]:
    """The scalar metrics of a metrics dict, for mlflow.log_metrics."""
    return {
        f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _log_child(
    store: ModelStore,
    candidate: CandidateRun,
    example: pd.DataFrame,
    with_model: bool,
    number_types: Mapping[str, str],
) -> str:
    with mlflow.start_run(
        run_name=candidate.family, nested=True, experiment_id=mlflow.active_run().info.experiment_id
    ) as child:
        mlflow.set_tag("ontos.family", candidate.family)
        mlflow.log_params({k: v for k, v in candidate.params.items()} or {"defaults": True})
        mlflow.log_metrics({**_numeric(candidate.metrics, "val_"), "fit_seconds": candidate.seconds})
        mlflow.log_dict(candidate.metrics, "validation_metrics.json")
        if with_model:
            log_pyfunc(store, candidate.model, example, None, number_types)
        return child.info.run_id


def number_types(spec: UseCaseSpec) -> dict[str, str]:
    """MLflow type of each number column of the sheet, from its spec type (long for integer, double for double)."""
    mlflow_type = {"integer": "long", "double": "double"}
    return {c.name: mlflow_type[c.type] for c in spec.sheet.columns if c.type in mlflow_type}


def signature_of(example: pd.DataFrame, output: list[dict], number_types: Mapping[str, str]) -> ModelSignature:
    """The signature inferred from the example, number columns typed by the spec rather than by the sample: an
    integer column with a null in the example rows would otherwise be `double`, and MLflow then refuses the int64
    values a caller naturally sends (and the sample, so the signature, could differ from one training to the next)."""
    inferred = infer_signature(example, output)
    inputs = [ColSpec(number_types.get(c.name, c.type), c.name, required=c.required) for c in inferred.inputs.inputs]
    return ModelSignature(Schema(inputs), inferred.outputs)


def example_rows(train: pd.DataFrame, spec: UseCaseSpec) -> pd.DataFrame:
    """Training rows (approved for training, so never PHI) for the input example, preferring rows whose integer
    columns are all set, so the example matches the `long` type the signature gives them."""
    integers = [c.name for c in spec.sheet.columns if c.type == "integer" and c.name in train.columns]
    complete = train.dropna(subset=integers).head(EXAMPLE_ROWS) if integers else train.head(EXAMPLE_ROWS)
    if not len(complete):
        return train.head(EXAMPLE_ROWS)
    return complete.astype({c: "int64" for c in integers})  # a column with nulls elsewhere came as float64


def log_pyfunc(
    store: ModelStore,
    model: ResponseModel,
    example: pd.DataFrame,
    registered_name: str | None,
    number_types: Mapping[str, str],
):
    example = example[model.input_columns].reset_index(drop=True)
    signature = signature_of(example, model.predict(example), number_types)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=OntosPyfunc(model),
        signature=signature,
        input_example=example,
        registered_model_name=registered_name,
        **store.packaging(),
    )


def log_training(
    store: ModelStore,
    spec: UseCaseSpec,
    template: CompiledTemplate,
    outcome: TrainingOutcome,
    lineage: Lineage,
    train: pd.DataFrame,
    val_rows: int,
    run_name: str,
    dagster_run_id: str | None,
    trainer: str,
    seed: int,
    cli_env: Mapping[str, str],
) -> TrainedModel:
    """Log the candidates and the winner, register it and point `challenger` at the new version."""
    store.activate()
    example, numbers = example_rows(train, spec), number_types(spec)
    name = store.model_name(spec.name)
    experiment_id = store.experiment_id(spec.name)
    mlflow.set_experiment(experiment_id=experiment_id)  # child runs land in the parent's experiment too
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags={"dagster_run_id": dagster_run_id or "", "ontos.use_case": spec.name, "ontos.trainer": trainer},
    ) as run:
        run_id = run.info.run_id
        mlflow.log_params(
            {
                "use_case": spec.name,
                "metric": outcome.metric,
                "winner": outcome.best.family,
                "trainer": trainer,
                "seed": seed,
                "train_rows": len(train),
                "val_rows": val_rows,
                "training_sheet_version": lineage.training_sheet_version,
                "sheet_version": lineage.sheet_version,
                "template_version": lineage.template_version,
                "label_snapshot_version": lineage.label_snapshot_version,
                **{f"winner.{k}": v for k, v in outcome.best.params.items()},
            }
        )
        baseline_run_id = ""
        for candidate in outcome.candidates:
            child = _log_child(store, candidate, example, candidate.family == "baseline", numbers)
            baseline_run_id = child if candidate.family == "baseline" else baseline_run_id
        mlflow.set_tag("ontos.baseline_run_id", baseline_run_id)
        mlflow.log_metrics(
            {**_numeric(outcome.best.metrics, "val_"), f"baseline_val_{outcome.metric}": outcome.baseline.headline}
        )
        if outcome.search:
            mlflow.log_dict(outcome.search, "search.json")
            mlflow.log_metrics({f"importance.{k}": v for k, v in outcome.search.get("importances", {}).items()})
        pack = reproducibility_pack(spec, template, lineage, outcome, trainer, seed, cli_env, run_id)
        mlflow.log_dict(pack, PACK)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / pack["spec"]["file"]).write_text(pack["spec"]["text"], encoding="utf-8")
            mlflow.log_artifacts(tmp, "reproducibility")
        info = log_pyfunc(store, outcome.best.model, example, name, numbers)
    version = str(info.registered_model_version)
    client = store.client()
    for key, value in (
        ("use_case", spec.name),
        ("family", outcome.best.family),
        ("training_sheet_version", lineage.training_sheet_version),
        ("dagster_run_id", dagster_run_id),
    ):
        client.set_model_version_tag(name, version, key, str(value or ""))
    store.set_alias(spec.name, CHALLENGER, version)
    return TrainedModel(
        name,
        version,
        run_id,
        baseline_run_id,
        outcome.best.family,
        outcome.metric,
        outcome.best.headline,
        outcome.baseline.headline,
        pack,
    )


def record_training_run(
    lakehouse: Lakehouse, spec: UseCaseSpec, trained: TrainedModel, lineage: Lineage, dagster_run_id: str | None
) -> None:
    """Upsert the lineage row of this model version (re-running the same MLflow run never duplicates it)."""
    row = {
        "mlflow_run_id": trained.run_id,
        "use_case": spec.name,
        "model_name": trained.model_name,
        "model_version": trained.version,
        "training_sheet_id": lineage.training_sheet_id,
        "training_sheet_version": lineage.training_sheet_version,
        "sheet_version": lineage.sheet_version,
        "template_version": lineage.template_version,
        "label_snapshot_version": lineage.label_snapshot_version,
        "export_checksums": json.dumps(lineage.export_checksums(), sort_keys=True),
        "metrics": json.dumps(
            {
                "metric": trained.metric,
                "validation": trained.validation,
                "baseline_validation": trained.baseline_validation,
                "family": trained.family,
            }
        ),
        "dagster_run_id": dagster_run_id,
        "git_sha": trained.pack.get("git_sha"),
        "created_at": datetime.now(UTC),
    }
    lakehouse.upsert_records(RUNS_TABLE, [row], keys=["mlflow_run_id"])
