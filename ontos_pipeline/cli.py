"""`ontos`: the commands people use around the Dagster code location (the demo, the UI, spec validation)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ontos_pipeline.cli_serving import add_parsers as add_serving_parsers
from ontos_pipeline.cli_tasks import add_parsers as add_task_parsers
from ontos_pipeline.console import format_table
from ontos_pipeline.settings import Settings, SettingsError, load_settings
from ontos_pipeline.specs import SpecError, load_use_cases

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
        from ontos_pipeline.threads import concurrent_runs

        text = INSTANCE_CONFIG.format(mark=INSTANCE_MARK, runs=concurrent_runs())
        config.write_text(text, encoding="utf-8")  # ours (not edited by hand): keep it current
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo data, run the pipeline, serve, send traffic and monitor, for every use case."""
    from ontos_pipeline.demo import run_demo

    return run_demo(args)


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


def cmd_engine(args: argparse.Namespace) -> int:
    """Start, stop or show the warm local Spark engine every local process connects to."""
    from ontos_pipeline import engine

    directory = engine.engine_home()
    if args.action == "start":
        print(f"running: {engine.ensure(directory).describe()}")
    elif args.action == "stop":
        stopped = engine.stop(directory)
        print(f"stopped the engine (pid {stopped.pid})" if stopped else f"no engine is running ({directory})")
    else:
        found = engine.running(directory)
        print(f"running: {found.describe()}" if found else
              f"not running ({directory}); the next command that needs Spark starts it")
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    settings = load_settings()
    directory = Path(args.directory) if args.directory else settings.use_cases_dir
    specs = load_use_cases(directory)
    print(format_table(["use case", "file", "sources", "columns", "response"], [
        [s.name, s.path.name, len(s.sheet.sources), len(s.sheet.columns), s.template.response_kind]
        for s in specs.values()]))
    return 0


def _spec(settings: Settings, use_case: str):
    specs = load_use_cases(settings.use_cases_dir)
    if use_case not in specs:
        raise SpecError(settings.use_cases_dir, "", f"unknown use case {use_case!r}; known: {', '.join(specs)}")
    return specs[use_case]


def reviewer_name(explicit: str | None) -> str:
    import getpass

    return explicit or os.environ.get("ONTOS_USER") or getpass.getuser()


def cmd_review(args: argparse.Namespace) -> int:
    """List, show and decide on training-sheet items (delta-rs reads and one append: no Spark, no Dagster)."""
    from ontos_pipeline.stages import review
    from ontos_pipeline.stages.qa_pairs import review_history, training_sheet_rows, training_sheet_version

    settings = load_settings()
    lakehouse, spec = settings.local_lakehouse(), _spec(settings, args.use_case)
    sheet_id = spec.training_sheet_id
    if args.action == "list":
        rows = training_sheet_rows(lakehouse, sheet_id, status=args.status, limit=args.limit,
                                   columns=["status", "response_source", "split", "response"])
        print(f"training sheet {sheet_id} version {training_sheet_version(lakehouse, sheet_id)}")
        print(format_table(["item_ref", "status", "source", "split", "response"], [
            [r["item_ref"], r["status"], r["response_source"] or "-", r["split"], _short(r["response"])]
            for r in rows]))
        return 0
    if args.action == "show":
        found = training_sheet_rows(lakehouse, sheet_id, items=args.items)
        if not found:
            raise review.ReviewError(f"item {args.items[0]!r} is not in training sheet {sheet_id}")
        row = found[0]
        for message in json.loads(row["messages"]):
            print(f"[{message['role']}]\n{message['content']}\n")
        print(f"[response] {row['response']}\nstatus {row['status']}, source {row['response_source']}, split "
              f"{row['split']}, version {row['version']}, prohibited uses {list(row['prohibited_uses'] or [])}")
        for h in review_history(lakehouse, sheet_id, args.items[0]):
            print(f"  {h['created_at']:%Y-%m-%d %H:%M} {h['reviewer']}: {h['decision']} {h['label_data'] or ''}"
                  f" {h['comment'] or ''}")
        return 0
    decisions = [review.Decision(item, args.action, args.label, args.comment) for item in args.items]
    if args.file:
        decisions += review.read_decisions(Path(args.file), default_decision=args.action)
    ids = review.record_decisions(lakehouse, spec, decisions, reviewer_name(args.reviewer), args.version)
    print(f"recorded {len(ids)} decision(s) on {sheet_id}; they apply at the next materialization "
          "of canonical_labels and training_sheet")
    return 0


def cmd_labels_import(args: argparse.Namespace) -> int:
    """Validate a CSV/JSONL label file and place it in the use case's inbox (atomically)."""
    from ontos_pipeline.stages.label_files import inbox_dir, parse_label_file, response_validator, validate_label

    settings = load_settings()
    spec, source = _spec(settings, args.use_case), Path(args.file)
    if source.suffix not in (".csv", ".jsonl") or not source.is_file():
        print(f"error: {source}: expected an existing .csv or .jsonl file", file=sys.stderr)
        return 2
    validator = response_validator(spec.template.response_schema)
    rows = parse_label_file(source, spec.template.response_kind)
    problems = [r["error"] or f"{r['source_ref']}: item {r['item_ref']!r}: label {reason}" for r in rows
                if r["error"] or (reason := validate_label(validator, r["label_data"])[0])]
    print(f"{source.name}: {len(rows)} labels, {len(rows) - len(problems)} valid, {len(problems)} invalid")
    for problem in problems[:20]:
        print(f"  {problem}", file=sys.stderr)
    if problems and not args.allow_rejects:
        print("nothing imported: fix the lines above, or pass --allow-rejects to import the file and keep the "
              "invalid labels in label_rejects with their reasons", file=sys.stderr)
        return 2
    target = inbox_dir(settings.local_lakehouse(), spec.name) / source.name
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    print(f"imported into {target}; it is merged at the next materialization of canonical_labels "
          f"({spec.name})")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuild a model's training data from its reproducibility pack; exit 1 unless byte-identical."""
    from ontos_pipeline.spark_session import get_spark
    from ontos_pipeline.stages.reproduce import rebuild_training_data
    from ontos_pipeline.stages.train import PACK

    settings = load_settings()
    if args.pack:
        try:
            pack = json.loads(Path(args.pack).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the reproducibility pack {args.pack}: {exc}; pass the pack.json of a "
                             "trained_model run (MLflow artifact reproducibility/pack.json)") from None
    else:
        import mlflow

        store = settings.local_model_store()
        try:
            pack = mlflow.artifacts.load_dict(f"runs:/{args.run_id}/{PACK}")
        except Exception as exc:  # MlflowException and OSError: no such run or no pack in it
            raise ValueError(f"no reproducibility pack for MLflow run {args.run_id!r} in {store.tracking_uri} "
                             f"({type(exc).__name__}); pass the run id a trained_model materialization shows") from None
    result = rebuild_training_data(get_spark(), settings.local_lakehouse(), pack, args.out)
    print(f"rebuilt {pack['use_case']} training data (training sheet {pack['data']['training_sheet_version']}) "
          f"into {result.manifest.directory}")
    for key, sha in sorted(result.actual.items()):
        print(f"  {'same' if result.expected.get(key) == sha else 'DIFFERENT'}  {key}  {sha[:16]}")
    if not result.identical:
        print(f"{len(result.mismatches)} files differ from the pack: {', '.join(result.mismatches)}", file=sys.stderr)
        return 1
    print(f"all {len(result.actual)} files are byte-identical to the pack")
    return 0


def _short(value: object, width: int = 60) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


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
    eng = sub.add_parser("engine", help="the warm local Spark engine: status, start, stop")
    eng.add_argument("action", choices=["status", "start", "stop"], nargs="?", default="status")
    eng.set_defaults(func=cmd_engine)
    specs = sub.add_parser("specs", help="validate the use-case files and list them")
    specs.add_argument("directory", nargs="?", help="folder of use-case YAML files (default: ONTOS_USE_CASES_DIR)")
    specs.set_defaults(func=cmd_specs)

    rev = sub.add_parser("review", help="review training-sheet items: list, show, approve, edit, reject, flag")
    rev_sub = rev.add_subparsers(dest="action", required=True)
    for action in ("list", "show", "approve", "edit", "reject", "flag"):
        p = rev_sub.add_parser(action)
        p.add_argument("use_case")
        if action == "list":
            p.add_argument("--status", help="only items with this status (e.g. pending, flagged)")
            p.add_argument("--limit", type=int, default=20)
        elif action == "show":
            p.add_argument("items", nargs=1, metavar="ITEM_REF")
        else:
            p.add_argument("items", nargs="*", metavar="ITEM_REF")
            p.add_argument("--file", help="CSV/JSONL of decisions (item_ref[,decision,label,comment]) for bulk review")
            p.add_argument("--comment")
            p.add_argument("--reviewer", help="who decides (default: $ONTOS_USER or the login name)")
            p.add_argument("--version", help="the training-sheet version you reviewed (stale decisions are refused)")
            p.add_argument("--label", help="the corrected label as JSON (edit)" if action == "edit"
                           else argparse.SUPPRESS)
        p.set_defaults(func=cmd_review, label=None)

    labels = sub.add_parser("labels", help="label files")
    labels_sub = labels.add_subparsers(dest="action", required=True)
    imp = labels_sub.add_parser("import", help="validate a CSV/JSONL label file and put it in the inbox")
    imp.add_argument("file")
    imp.add_argument("--use-case", required=True)
    imp.add_argument("--allow-rejects", action="store_true",
                     help="import even if some labels are invalid (they are kept in label_rejects)")
    imp.set_defaults(func=cmd_labels_import)

    rebuild = sub.add_parser("rebuild-training-data",
                             help="rebuild a trained model's training data from its reproducibility pack")
    source = rebuild.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", help="the MLflow run of the trained model")
    source.add_argument("--pack", help="a reproducibility pack (pack.json) downloaded from MLflow")
    rebuild.add_argument("--out", required=True, help="directory to write the rebuilt export into")
    rebuild.set_defaults(func=cmd_rebuild)
    add_serving_parsers(sub)
    add_task_parsers(sub)
    return parser


TARGET_INDEPENDENT = {"ui", "specs", "engine"}  # the other commands read or write the local target's state


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    if getattr(args, "rows", None) is not None and args.rows < 1:
        print("--rows must be at least 1", file=sys.stderr)
        return 2
    try:
        if load_settings().target != "local" and args.command not in TARGET_INDEPENDENT:
            print(f"error: `ontos {args.command}` works on the embedded local target (its tables, MLflow store and "
                  "serving process). With ONTOS_TARGET=databricks, materialize through Dagster instead: `dagster job "
                  "execute -m ontos_pipeline.definitions -j full_pipeline --tags '{\"dagster/partition\": "
                  "\"<use case>\"}'` or the UI (README: Running on Databricks)", file=sys.stderr)
            return 2
        return args.func(args)
    except (SpecError, SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
