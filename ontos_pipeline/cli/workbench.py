"""`ontos demo`, `ontos ui`, `ontos engine` and `ontos specs`: the demo loop, the Dagster UI, the local Spark engine
and the use-case files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ontos_pipeline.cli.context import Context
from ontos_pipeline.instance import prepare_dagster_home
from ontos_pipeline.platform.console import format_table
from ontos_pipeline.specs import load_use_cases


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo data, run the pipeline, serve, send traffic and monitor, for every use case."""
    from ontos_pipeline.demo.run import run_demo

    return run_demo(args)


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` on this code location, with the instance the demo recorded its runs in."""
    settings = Context.load().settings
    prepare_dagster_home(settings)
    bin_dir = Path(sys.executable).parent
    dagster = bin_dir / "dagster"
    command = [
        str(dagster) if dagster.exists() else "dagster",
        "dev",
        "-m",
        "ontos_pipeline.definitions",
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    print(f"DAGSTER_HOME={settings.dagster_home} {' '.join(command)}", flush=True)
    os.execvp(command[0], command)
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    """Start, stop or show the warm local Spark engine every local process connects to."""
    from ontos_pipeline.platform import engine

    directory = engine.engine_home()
    if args.action == "start":
        print(f"running: {engine.ensure(directory).describe()}")
    elif args.action == "stop":
        stopped = engine.stop(directory)
        print(f"stopped the engine (pid {stopped.pid})" if stopped else f"no engine is running ({directory})")
    else:
        found = engine.running(directory)
        print(
            f"running: {found.describe()}"
            if found
            else f"not running ({directory}); the next command that needs Spark starts it"
        )
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    if args.reference:
        from ontos_pipeline.spec_reference import reference_markdown

        print(reference_markdown(), end="")
        return 0
    directory = Path(args.directory) if args.directory else Context.load().settings.use_cases_dir
    specs = load_use_cases(directory)
    print(
        format_table(
            ["use case", "file", "sources", "columns", "response"],
            [
                [s.name, s.path.name, len(s.sheet.sources), len(s.sheet.columns), s.template.response_kind]
                for s in specs.values()
            ],
        )
    )
    return 0


def add_parsers(sub) -> None:
    demo = sub.add_parser("demo", help="generate the demo data and run the whole pipeline for every use case")
    demo.add_argument("--rows", type=int, help="items per use case (default: each spec's synthetic.rows)")
    demo.add_argument("--use-case", action="append", help="run only this use case (repeatable)")
    demo.add_argument("--verbose", action="store_true", help="print Dagster's step logs")
    demo.set_defaults(func=cmd_demo)
    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the demo's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    eng = sub.add_parser("engine", help="the warm local Spark engine: status, start, stop")
    eng.add_argument("action", choices=["status", "start", "stop"], nargs="?", default="status")
    eng.set_defaults(func=cmd_engine)
    specs = sub.add_parser("specs", help="validate the use-case files and list them")
    specs.add_argument("directory", nargs="?", help="folder of use-case YAML files (default: ONTOS_USE_CASES_DIR)")
    specs.add_argument(
        "--reference", action="store_true", help="print the reference of every field (docs/use-case-reference.md)"
    )
    specs.set_defaults(func=cmd_specs)
