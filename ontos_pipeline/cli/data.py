"""`ontos data load`, `ontos use-case init` and `ontos run`: from a file of one's own to a use case and its runs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ontos_pipeline.cli.context import Context
from ontos_pipeline.platform.console import format_table


def _types(text: str | None) -> dict[str, str]:
    pairs = [p.strip() for p in (text or "").replace(" ", ",").split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1]
    if bad:
        raise ValueError(f"--types {bad[0]!r}: expected column=type pairs, e.g. --types zip=string,age=integer")
    return dict(p.split("=") for p in pairs)


def cmd_load(args: argparse.Namespace) -> int:
    from ontos_pipeline.data.loading import load

    started = time.perf_counter()
    ctx = Context.load()
    loaded = load(
        ctx.lakehouse,
        Path(args.source),
        args.table,
        key=args.key,
        types=_types(args.types),
        image_columns=args.image_column or (),
        metadata=Path(args.metadata) if args.metadata else None,
        mode=args.mode,
    )
    print(
        f"loaded {args.source} into {loaded.table}: {loaded.rows} rows, version {loaded.version}, item_ref from "
        f"{loaded.key} ({time.perf_counter() - started:.1f} s)"
    )
    if loaded.renamed:
        print("renamed headers: " + ", ".join(f"{h!r} -> {n}" for h, n in loaded.renamed.items()))
    print(
        format_table(
            ["column", "type", "images stored"],
            [[c, t, loaded.images.get(c, "")] for c, t in loaded.columns.items()],
        )
    )
    print(f"next: uv run ontos use-case init <name> --table {args.table} --label-column <column>")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ontos_pipeline.data.scaffold import scaffold, write_scaffold
    from ontos_pipeline.platform.identifiers import validate_identifier

    ctx = Context.load()
    name = validate_identifier(args.name, what="use-case name")
    out = Path(args.out) if args.out else ctx.settings.use_cases_dir / f"{name}.yaml"
    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    result = scaffold(ctx.lakehouse, name, args.table, out, args.label_column, classes, args.number)
    write_scaffold(result, force=args.force)
    print(f"wrote {out}: response {result.response}")
    notes = {c: "spells out the label: kept, not an input" for c in result.leaks}
    rows = [[c, cat, notes.get(c, "")] for c, cat in result.categories.items()]
    print(format_table(["column", "category", "note"], rows))
    if out.parent.resolve() != ctx.settings.use_cases_dir.resolve():
        print(f"note: ONTOS_USE_CASES_DIR is {ctx.settings.use_cases_dir}; export ONTOS_USE_CASES_DIR={out.parent}")
    print(f"next: uv run ontos specs, then uv run ontos run {name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """One job for one use case, in this process, recorded in the persistent instance (as the UI shows it)."""
    import logging
    import warnings

    from dagster import DagsterInstance

    from ontos_pipeline.definitions import build_definitions
    from ontos_pipeline.demo.run import _model_row, _pipeline_state, _summary_row
    from ontos_pipeline.instance import prepare_dagster_home
    from ontos_pipeline.pipeline import FULL_PIPELINE, RETRAIN

    ctx = Context.load()
    ctx.spec(args.use_case)
    prepare_dagster_home(ctx.settings)
    if not args.verbose:
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO" if args.verbose else "WARNING"}}}}
    started = time.perf_counter()
    result = (
        build_definitions(ctx.settings)
        .resolve_job_def(args.job)
        .execute_in_process(
            partition_key=args.use_case,
            instance=DagsterInstance.get(),
            run_config=run_config,
            raise_on_error=False,
            tags={"ontos/command": "run"},
        )
    )
    seconds = time.perf_counter() - started
    state = _pipeline_state(result)
    print(f"{args.job} {args.use_case}: {state} in {seconds:.1f} s (run {result.run_id})")
    if args.job in (FULL_PIPELINE, RETRAIN):
        headers = ["use case", "items", "sheet", "labelled", "auto / pending / rejected / flagged", "exported"]
        print(
            format_table(
                [*headers, "checks", "PHI", "seconds"],
                [_summary_row(args.use_case, result, seconds)],
            )
        )
        print(
            format_table(
                ["use case", "model", "metric", "baseline", "model", "gate"], [_model_row(args.use_case, result)]
            )
        )
    for node in sorted({e.node_name for e in result.all_events if e.is_step_failure}):
        print(f"failed step: {node}", file=sys.stderr)
    return 0 if result.success else 1


def add_parsers(sub) -> None:
    data = sub.add_parser("data", help="load one's own data into the lakehouse")
    data_sub = data.add_subparsers(dest="action", required=True)
    load = data_sub.add_parser(
        "load", help="a CSV, Parquet or JSONL file, or a folder of images, into a table (one atomic commit)"
    )
    load.add_argument("source", help="file (.csv, .parquet, .jsonl) or folder of images")
    load.add_argument("--table", required=True, help="schema.table (or catalog.schema.table), e.g. raw.penguins")
    load.add_argument("--key", help="the column that identifies an item (default: item_ref, else row numbers)")
    load.add_argument("--types", help="column=type pairs overriding inference, e.g. zip=string,age=integer")
    load.add_argument("--image-column", action="append", help="a column of image paths or base64 (repeatable)")
    load.add_argument("--metadata", help="for a folder of images: a CSV with a `file` column (default metadata.csv)")
    load.add_argument("--mode", choices=("replace", "upsert"), default="replace", help="upsert: by item_ref")
    load.set_defaults(func=cmd_load)

    use_case = sub.add_parser("use-case", help="use-case files")
    uc_sub = use_case.add_subparsers(dest="action", required=True)
    init = uc_sub.add_parser("init", help="write a use-case YAML for a loaded table, inferred from its columns")
    init.add_argument("name", help="the use case (a partition): letters, digits, underscores")
    init.add_argument("--table", required=True, help="the loaded table (the sheet's source)")
    init.add_argument("--label-column", help="the column to predict (its values are the labels)")
    init.add_argument("--classes", help="no label column: the classes, comma-separated")
    init.add_argument("--number", action="store_true", help="no label column: predict a number")
    init.add_argument("--out", help="the file to write (default: $ONTOS_USE_CASES_DIR/<name>.yaml)")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=cmd_init)

    run = sub.add_parser("run", help="run a job for one use case (default: full_pipeline) on the persistent instance")
    run.add_argument("use_case")
    run.add_argument("--job", choices=("full_pipeline", "retrain", "monitor", "improve"), default="full_pipeline")
    run.add_argument("--verbose", action="store_true", help="print Dagster's step logs")
    run.set_defaults(func=cmd_run)
