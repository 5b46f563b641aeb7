"""Databricks settings from the environment, validated without touching the network.

Credentials (`DATABRICKS_TOKEN`, `DATABRICKS_CLIENT_SECRET`) are never copied into our objects: they stay in the
process environment, where databricks-sdk's unified authentication reads them when a client is first needed.
So they cannot reach resource config, run config, logs, asset metadata or MLflow params through our code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ontos_pipeline.platform.identifiers import validate_identifier

DEFAULT_SPARK_VERSION = "15.4.x-cpu-ml-scala2.12"  # an LTS ML runtime: MLflow, scikit-learn, pandas included
DEFAULT_NODE_TYPE = "i3.xlarge"
_VOLUME = re.compile(r"^/Volumes/([^/]+)/([^/]+)/([^/]+)(/.*)?$")
_CLUSTER_ID = re.compile(r"^[0-9A-Za-z-]{6,64}$")
Compute = Literal["job_cluster", "serverless", "existing_cluster"]


class DatabricksConfigError(ValueError):
    """The Databricks environment variables are missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class DatabricksConfig:
    """Everything about the workspace that is not a secret (safe for resource config and logs)."""

    catalog: str
    schema: str
    volume: str  # /Volumes/<catalog>/<schema>/<volume>[/sub/folders]
    compute: Compute = "job_cluster"
    cluster_id: str | None = None
    spark_version: str = DEFAULT_SPARK_VERSION
    node_type: str = DEFAULT_NODE_TYPE
    workers: int = 1
    run_timeout_seconds: int = 3600
    poll_seconds: float = 10.0
    extra_libraries: tuple[str, ...] = ()


def _positive(env: Mapping[str, str], var: str, default: str, *, number=int):
    text = env.get(var, default).strip()
    try:
        value = number(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise DatabricksConfigError(f"{var}={text!r} is not a positive number")
    return value


def check_credentials(env: Mapping[str, str]) -> None:
    """Fail unless databricks-sdk will find a host and credentials: a config profile, or host with a token
    (or OAuth client id and secret). Only presence and shape are checked; nothing is sent anywhere."""
    if env.get("DATABRICKS_CONFIG_PROFILE"):
        return
    host = env.get("DATABRICKS_HOST", "").strip()
    if not host:
        raise DatabricksConfigError(
            "ONTOS_TARGET=databricks needs a workspace: set DATABRICKS_HOST (https://<workspace>.cloud.databricks.com)"
            " and DATABRICKS_TOKEN, or DATABRICKS_CONFIG_PROFILE naming a profile in ~/.databrickscfg"
        )
    if not re.match(r"^https?://[A-Za-z0-9.-]+(:\d+)?/?$", host):
        raise DatabricksConfigError(
            "DATABRICKS_HOST must be a workspace URL such as "
            "https://<workspace>.cloud.databricks.com (scheme and host only)"
        )
    has_oauth = env.get("DATABRICKS_CLIENT_ID") and env.get("DATABRICKS_CLIENT_SECRET")
    if not env.get("DATABRICKS_TOKEN", "").strip() and not has_oauth:
        raise DatabricksConfigError(
            "DATABRICKS_HOST is set but there are no credentials: set DATABRICKS_TOKEN (a "
            "personal access token) or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET"
        )


def volume_from_env(catalog: str, schema: str, env: Mapping[str, str]) -> str:
    """ONTOS_DATABRICKS_VOLUME (default `/Volumes/<catalog>/<schema>/ontos`), validated."""
    volume = env.get("ONTOS_DATABRICKS_VOLUME", f"/Volumes/{catalog}/{schema}/ontos").rstrip("/")
    match = _VOLUME.match(volume)
    if not match:
        raise DatabricksConfigError(
            f"ONTOS_DATABRICKS_VOLUME={volume!r} is not a Unity Catalog volume path; use "
            "/Volumes/<catalog>/<schema>/<volume>"
        )
    for part, what in zip(match.groups()[:3], ("catalog", "schema", "volume"), strict=True):
        try:
            validate_identifier(part, what=f"ONTOS_DATABRICKS_VOLUME {what}")
        except ValueError as exc:
            raise DatabricksConfigError(str(exc)) from None
    return volume


def load_databricks_config(catalog: str, schema: str, env: Mapping[str, str] | None = None) -> DatabricksConfig:
    """Read ONTOS_DATABRICKS_* variables (and check the credentials are there) into a secret-free config."""
    env = dict(os.environ if env is None else env)
    check_credentials(env)
    volume = volume_from_env(catalog, schema, env)
    compute_text = env.get("ONTOS_DATABRICKS_COMPUTE", "job_cluster").strip()
    cluster_id = None
    if compute_text.startswith("existing:"):
        cluster_id = compute_text.split(":", 1)[1]
        if not _CLUSTER_ID.match(cluster_id):
            raise DatabricksConfigError(
                f"ONTOS_DATABRICKS_COMPUTE={compute_text!r}: {cluster_id!r} is not a "
                "cluster id (e.g. existing:0123-456789-abcdefgh)"
            )
        compute: Compute = "existing_cluster"
    elif compute_text in ("job_cluster", "serverless"):
        compute = compute_text  # type: ignore[assignment]
    else:
        raise DatabricksConfigError(
            f"ONTOS_DATABRICKS_COMPUTE={compute_text!r} is not one of job_cluster, serverless, existing:<cluster-id>"
        )
    libraries = tuple(x.strip() for x in env.get("ONTOS_DATABRICKS_LIBRARIES", "").split(",") if x.strip())
    return DatabricksConfig(
        catalog=catalog,
        schema=schema,
        volume=volume,
        compute=compute,
        cluster_id=cluster_id,
        spark_version=env.get("ONTOS_DATABRICKS_SPARK_VERSION", DEFAULT_SPARK_VERSION),
        node_type=env.get("ONTOS_DATABRICKS_NODE_TYPE", DEFAULT_NODE_TYPE),
        workers=_positive(env, "ONTOS_DATABRICKS_WORKERS", "1"),
        run_timeout_seconds=_positive(env, "ONTOS_DATABRICKS_RUN_TIMEOUT", "3600"),
        poll_seconds=_positive(env, "ONTOS_DATABRICKS_POLL_SECONDS", "10", number=float),
        extra_libraries=libraries,
    )
