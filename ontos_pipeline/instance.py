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
run_launcher:  # the default launcher, but run monitoring can tell when a run's process died
  module: ontos_pipeline.platform.run_launcher
  class: LocalRunLauncher
run_monitoring:  # the daemon marks a run whose worker was killed as failed (it would stay STARTED, holding a slot)
  enabled: true
  poll_interval_seconds: {poll}
  max_resume_run_attempts: 0
run_retries:  # ... and launches it once more; a step that failed by itself is not retried
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
"""
MONITOR_POLL_SECONDS = 15


def prepare_dagster_home(settings: Settings, poll_seconds: int = MONITOR_POLL_SECONDS) -> Path:
    """Point DAGSTER_HOME at the persistent instance under ONTOS_HOME (created on first use); `poll_seconds`: how
    often the daemon checks that started runs still have their process."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text(encoding="utf-8").startswith(("telemetry:", INSTANCE_MARK)):
        from ontos_pipeline.platform.threads import concurrent_runs

        text = INSTANCE_CONFIG.format(mark=INSTANCE_MARK, runs=concurrent_runs(), poll=poll_seconds)
        config.write_text(text, encoding="utf-8")  # ours (not edited by hand): keep it current
    os.environ["DAGSTER_HOME"] = str(home)
    return home
