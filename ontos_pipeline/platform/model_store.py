"""Models in MLflow: one experiment and one registered model per use case, aliases.

Locally the tracking and registry store is SQLite under ONTOS_HOME and artifacts are files next to it; on
Databricks the same calls go to the workspace tracking server and the `databricks-uc` registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import mlflow
    from mlflow.entities.model_registry import ModelVersion

CHAMPION, CHALLENGER = "champion", "challenger"  # the model aliases: served, and waiting for its gate
AB_CHALLENGER = "ab_challenger"  # passed its gate, serving a share of the traffic in an A/B test against champion
PIP_REQUIREMENTS = ["ontos-pipeline", "scikit-learn", "pandas", "numpy", "jinja2", "pillow", "scipy"]


def _mlflow():
    """MLflow, imported on first use (commands that only name aliases or stores stay light)."""
    import mlflow  # telemetry and progress bars are off (ontos_pipeline/__init__.py)

    return mlflow


@dataclass(frozen=True)
class ModelStore:
    """Where runs, artifacts and registered models live (built by the MLflow resource)."""

    tracking_uri: str
    registry_uri: str
    artifact_root: str | None = None  # local only: experiments keep their artifacts here
    catalog: str = "ontos"
    schema: str = "workbench"
    experiment_root: str = ""  # Databricks experiments are workspace paths, e.g. "/Shared/"
    self_contained: bool = False  # ship our code inside logged models (where ontos-pipeline is not installable)

    def packaging(self) -> dict:
        """How a logged model finds our code: installed next to it (local), or copied into the model (Databricks:
        Model Serving builds the model's environment from PyPI, where ontos-pipeline is not published)."""
        if not self.self_contained:
            return {"pip_requirements": PIP_REQUIREMENTS}
        return {
            "pip_requirements": [r for r in PIP_REQUIREMENTS if r != "ontos-pipeline"],
            "code_paths": [str(Path(__file__).resolve().parents[1])],
        }

    def activate(self) -> ModelStore:
        mlflow = _mlflow()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        return self

    def client(self) -> mlflow.MlflowClient:
        return _mlflow().MlflowClient(self.tracking_uri, self.registry_uri)

    def model_name(self, use_case: str) -> str:
        return f"{self.catalog}.{self.schema}.{use_case}"

    def experiment_id(self, use_case: str) -> str:
        name = f"{self.experiment_root}ontos-{use_case}"
        found = self.client().get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = Path(self.artifact_root, use_case).as_uri() if self.artifact_root else None
        return self.client().create_experiment(name, artifact_location=location)

    def version(self, use_case: str, alias: str) -> ModelVersion | None:
        """The version an alias points to, or None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(self.model_name(use_case), alias)
        except MlflowException:
            return None

    def set_alias(self, use_case: str, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(self.model_name(use_case), alias, str(version))

    def delete_alias(self, use_case: str, alias: str) -> bool:
        """Remove an alias; False when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        if self.version(use_case, alias) is None:
            return False
        try:
            self.client().delete_registered_model_alias(self.model_name(use_case), alias)
        except MlflowException:
            return False
        return True

    def load(self, uri: str):
        """The model behind a pyfunc URI (models:/name/1, models:/name@champion, runs:/id/model) that
        `train.tracking` logged: the python model's `model` (a trainer `ResponseModel`)."""
        self.activate()
        return _mlflow().pyfunc.load_model(uri).unwrap_python_model().model

    def version_uri(self, use_case: str, version: str) -> str:
        return f"models:/{self.model_name(use_case)}/{version}"


def databricks_store(catalog: str, schema: str) -> ModelStore:
    """The workspace tracking server and the Unity Catalog registry (`<catalog>.<schema>.<use case>` models)."""
    return ModelStore(
        "databricks", "databricks-uc", None, catalog, schema, experiment_root="/Shared/", self_contained=True
    )


def local_store(home: Path | str, catalog: str = "ontos", schema: str = "workbench") -> ModelStore:
    root = Path(home).absolute() / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    follow_moves(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return ModelStore(uri, uri, str(root / "artifacts"), catalog, schema)


ROOT_MARK = "root.txt"  # the folder the store's artifact URIs were last written for
# MLflow keeps absolute `file://` URIs of artifacts (it cannot resolve relative ones): these columns hold them
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


def follow_moves(root: Path) -> None:
    """A local store that was moved (or copied) with its ONTOS_HOME: rewrite the artifact URIs MLflow recorded
    under the old folder to the new one, in one SQLite transaction, before anything reads them. Cheap when
    nothing moved (one small file read)."""
    import fcntl
    import sqlite3

    mark, db = root / ROOT_MARK, root / "mlflow.db"
    here = root.as_uri()
    if mark.exists() and mark.read_text(encoding="utf-8").strip() == here:
        return
    with open(root / ".root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process rewrites; the others then find the new mark
        old = mark.read_text(encoding="utf-8").strip() if mark.exists() else None
        if old and old != here and db.exists():
            with sqlite3.connect(db) as connection:
                for table, column in ARTIFACT_COLUMNS:
                    if connection.execute(f"select 1 from sqlite_master where name = '{table}'").fetchone():
                        connection.execute(
                            f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?",
                            (here, len(old) + 1, len(old), old),
                        )
        partial = mark.with_name(f".{ROOT_MARK}.partial")
        partial.write_text(here + "\n", encoding="utf-8")
        partial.replace(mark)
