"""The `ontos` command line: one module per command group, each adding its parsers; `main` dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

TARGET_INDEPENDENT = {"ui", "specs", "engine"}  # the other commands read or write the local target's state


def build_parser() -> argparse.ArgumentParser:
    from ontos_pipeline.cli import data, rebuild, review, serving, tasks, trace, workbench

    parser = argparse.ArgumentParser(prog="ontos", description="Ontos Pipeline: the fine-tuning data loop on Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (workbench, data, review, rebuild, serving, tasks, trace):
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `ontos` command (its modules are imported here, so a Ctrl-C while they load is handled too)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: every writer commits atomically, so there is nothing half-done to report
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    from ontos_pipeline.settings import SettingsError, load_settings
    from ontos_pipeline.specs import SpecError

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    if getattr(args, "rows", None) is not None and args.rows < 1:
        print("--rows must be at least 1", file=sys.stderr)
        return 2
    try:
        if load_settings().target != "local" and args.command not in TARGET_INDEPENDENT:
            print(
                f"error: `ontos {args.command}` works on the embedded local target (its tables, MLflow store and "
                "serving process). With ONTOS_TARGET=databricks, materialize through Dagster instead: `dagster job "
                'execute -m ontos_pipeline.definitions -j full_pipeline --tags \'{"dagster/partition": '
                '"<use case>"}\'` or the UI (README: Running on Databricks)',
                file=sys.stderr,
            )
            return 2
        return args.func(args)
    except (SpecError, SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # a --file or FILE argument that does not exist: the user's, not a crash
        print(f"error: no such file: {exc.filename}; nothing was changed", file=sys.stderr)
        return 2
