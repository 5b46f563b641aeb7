"""Process-wide settings read from the environment (never from files, so secrets stay out of the repo)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ontos_pipeline.platform.identifiers import validate_identifier

TARGETS = ("local", "databricks")


class SettingsError(ValueError):
    """A setting from the environment is invalid."""


@dataclass(frozen=True)
class Settings:
    target: str
    home: Path
    catalog: str
    schema: str
    use_cases_dir: Path
    serve_port: int = 8765  # the local serving process (`ontos serve`) on 127.0.0.1
    sensor_interval: int = 30  # seconds between evaluations of the retrain sensor (ONTOS_SENSOR_INTERVAL)
    serve_token: str | None = field(default=None, repr=False)  # ONTOS_SERVE_TOKEN: a secret, never printed
    serve_image_roots: tuple[Path, ...] = ()  # ONTOS_SERVE_IMAGE_ROOTS: folders besides files/ requests may name
    dagster_url: str = "http://127.0.0.1:3000"  # ONTOS_DAGSTER_URL: the Dagster UI that notifications link to

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def tables_dir(self) -> Path:
        return self.home / "tables"

    def local_lakehouse(self):
        """The local target's lakehouse under `home` (delta-rs and Arrow only: no Spark, no Dagster)."""
        from ontos_pipeline.platform.lakehouse import LocalLakehouse

        return LocalLakehouse.under(self.home, self.catalog, self.schema)

    def local_model_store(self):
        """The local target's MLflow store under `home` (imports MLflow, not Dagster)."""
        from ontos_pipeline.platform.model_store import local_store

        return local_store(self.home, self.catalog, self.schema).activate()


def default_use_cases_dir() -> Path:
    import synthetic_data

    return Path(synthetic_data.__file__).resolve().parent / "use_cases"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read ONTOS_* variables; defaults give the embedded local target under ./.ontos."""
    env = dict(os.environ if env is None else env)
    target = env.get("ONTOS_TARGET", "local").strip().lower() or "local"
    if target not in TARGETS:
        raise SettingsError(f"ONTOS_TARGET={target!r} is not a target; use one of {', '.join(TARGETS)}")
    home = Path(env.get("ONTOS_HOME") or ".ontos").expanduser().resolve()
    catalog = env.get("ONTOS_CATALOG", "ontos")
    schema = env.get("ONTOS_SCHEMA", "workbench")
    for var, value in (("ONTOS_CATALOG", catalog), ("ONTOS_SCHEMA", schema)):
        try:
            validate_identifier(value, what=var)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    use_cases = env.get("ONTOS_USE_CASES_DIR")
    use_cases_dir = Path(use_cases).expanduser().resolve() if use_cases else default_use_cases_dir()
    port_text = env.get("ONTOS_SERVE_PORT", "8765")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SettingsError(f"ONTOS_SERVE_PORT={port_text!r} is not a TCP port; use a number from 1 to 65535")
    interval = env.get("ONTOS_SENSOR_INTERVAL", "30")
    if not interval.isdigit() or int(interval) < 1:
        raise SettingsError(f"ONTOS_SENSOR_INTERVAL={interval!r} is not a number of seconds; use an integer >= 1")
    token = env.get("ONTOS_SERVE_TOKEN") or None
    roots = tuple(Path(p).expanduser().resolve() for p in env.get("ONTOS_SERVE_IMAGE_ROOTS", "").split(os.pathsep) if p)
    dagster_url = (env.get("ONTOS_DAGSTER_URL") or "http://127.0.0.1:3000").strip().rstrip("/")
    if not dagster_url.startswith(("http://", "https://")) or len(dagster_url.split("://", 1)[1]) == 0:
        raise SettingsError(
            f"ONTOS_DAGSTER_URL={dagster_url!r} is not an http(s) URL; use the Dagster UI's address, "
            "e.g. http://127.0.0.1:3000"
        )
    return Settings(
        target, home, catalog, schema, use_cases_dir, int(port_text), int(interval), token, roots, dagster_url
    )
