"""`ontos`: the commands people use around the Dagster code location (the demo, the UI, spec validation)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ontos_pipeline.settings import Settings, SettingsError, load_settings
from ontos_pipeline.specs import SpecError, load_use_cases


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*cells[0]), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt.format(*r) for r in cells[1:]])


def prepare_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the persistent instance under ONTOS_HOME (created on first use)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo data and run the full pipeline for every use case, recorded in the instance."""
    from dagster import DagsterInstance

    from ontos_pipeline.definitions import FULL_PIPELINE, build_definitions

    settings = load_settings()
    prepare_dagster_home(settings)
    instance = DagsterInstance.get()
    specs = load_use_cases(settings.use_cases_dir)
    selected = args.use_case or list(specs)
    unknown = [u for u in selected if u not in specs]
    if unknown:
        print(f"unknown use case(s): {', '.join(unknown)}; known: {', '.join(specs)}", file=sys.stderr)
        return 2
    job = build_definitions(settings).resolve_job_def(FULL_PIPELINE)
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO" if args.verbose else "WARNING"}}}}
    if args.rows:
        run_config["ops"] = {"sources": {"config": {"rows": args.rows}}}
    print(f"Ontos Pipeline demo: {len(selected)} use cases, state in {settings.home}")
    rows, failed = [], 0
    for name in selected:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=name, instance=instance, run_config=run_config,
                                        raise_on_error=False, tags={"ontos/command": "demo"})
        rows.append(_summary_row(name, result, time.perf_counter() - started))
        failed += not result.success
        print(f"  {name}: {'ok' if result.success else 'FAILED'} (run {result.run_id[:8]})", flush=True)
    print()
    print(format_table(["use case", "source rows", "sheet rows", "sheet version", "checks", "PHI columns",
                        "seconds"], rows))
    print(f"\nRuns, materializations and checks are in the Dagster instance at {settings.dagster_home}; "
          "open it with `uv run ontos ui`.")
    return 1 if failed else 0


def _summary_row(name: str, result, seconds: float) -> list[object]:
    def meta(node: str) -> dict:
        mats = result.asset_materializations_for_node(node)
        return {k: v.value for k, v in mats[-1].metadata.items()} if mats else {}

    sources, sheet = meta("sources"), meta("sheet")
    checks = result.get_asset_check_evaluations()
    passed = sum(c.passed for c in checks)
    failed = [c.check_name for c in checks if not c.passed]
    return [name, sources.get("dagster/row_count", "-"), sheet.get("dagster/row_count", "-"),
            str(sheet.get("version", "-"))[:12], f"{passed}/{len(checks)}" + (f" ({', '.join(failed)})" if failed
                                                                           else ""),
            sheet.get("phi_columns", "-"), f"{seconds:.1f}"]


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` on this code location, with the instance the demo recorded its runs in."""
    settings = load_settings()
    prepare_dagster_home(settings)
    bin_dir = Path(sys.executable).parent
    dagster = bin_dir / "dagster"
    command = [str(dagster) if dagster.exists() else "dagster", "dev", "-m", "ontos_pipeline.definitions",
               "-h", args.host, "-p", str(args.port)]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    print(f"DAGSTER_HOME={settings.dagster_home} {' '.join(command)}", flush=True)
    os.execvp(command[0], command)
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    settings = load_settings()
    directory = Path(args.directory) if args.directory else settings.use_cases_dir
    specs = load_use_cases(directory)
    print(format_table(["use case", "file", "sources", "columns", "response"], [
        [s.name, s.path.name, len(s.sheet.sources), len(s.sheet.columns), s.template.response_kind]
        for s in specs.values()]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ontos", description="Ontos Pipeline: the fine-tuning data loop on Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the demo data and run the whole pipeline for every use case")
    demo.add_argument("--rows", type=int, help="items per use case (default: each spec's synthetic.rows)")
    demo.add_argument("--use-case", action="append", help="run only this use case (repeatable)")
    demo.add_argument("--verbose", action="store_true", help="print Dagster's step logs")
    demo.set_defaults(func=cmd_demo)
    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the demo's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    specs = sub.add_parser("specs", help="validate the use-case files and list them")
    specs.add_argument("directory", nargs="?", help="folder of use-case YAML files (default: ONTOS_USE_CASES_DIR)")
    specs.set_defaults(func=cmd_specs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    if getattr(args, "rows", None) is not None and args.rows < 1:
        print("--rows must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (SpecError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
