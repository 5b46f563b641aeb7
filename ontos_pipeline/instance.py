"""The persistent Dagster instance of ONTOS_HOME: the demo, `ontos ui` and the daemon record their runs there."""

from __future__ import annotations

import os
from pathlib import Path

from ontos_pipeline.settings import Settings

INSTANCE_MARK = "# written by ontos"
INSTANCE_CONFIG = """{mark}: the instance of ONTOS_HOME (delete this line to keep your own edits)
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: {runs}  # sensor- and UI-launched runs at once (ONTOS_CONCURRENT_RUNS); they share the engine
"""


def prepare_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the persistent instance under ONTOS_HOME (created on first use)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text(encoding="utf-8").startswith(("telemetry:", INSTANCE_MARK)):
        from ontos_pipeline.platform.threads import concurrent_runs

        text = INSTANCE_CONFIG.format(mark=INSTANCE_MARK, runs=concurrent_runs())
        config.write_text(text, encoding="utf-8")  # ours (not edited by hand): keep it current
    os.environ["DAGSTER_HOME"] = str(home)
    return home
