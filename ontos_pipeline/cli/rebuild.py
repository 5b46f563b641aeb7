"""`ontos rebuild-training-data`: rebuild a trained model's training data from its reproducibility pack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ontos_pipeline.cli.context import Context


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuild a model's training data from its reproducibility pack; exit 1 unless byte-identical."""
    from ontos_pipeline.platform.spark_session import get_spark
    from ontos_pipeline.train.reproduce import rebuild_training_data
    from ontos_pipeline.train.tracking import PACK

    ctx = Context.load()
    if args.pack:
        try:
            pack = json.loads(Path(args.pack).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot read the reproducibility pack {args.pack}: {exc}; pass the pack.json of a "
                "trained_model run (MLflow artifact reproducibility/pack.json)"
            ) from None
    else:
        import mlflow

        store = ctx.model_store()
        try:
            pack = mlflow.artifacts.load_dict(f"runs:/{args.run_id}/{PACK}")
        except Exception as exc:  # MlflowException and OSError: no such run or no pack in it
            raise ValueError(
                f"no reproducibility pack for MLflow run {args.run_id!r} in {store.tracking_uri} "
                f"({type(exc).__name__}); pass the run id a trained_model materialization shows"
            ) from None
    result = rebuild_training_data(get_spark(), ctx.lakehouse, pack, args.out)
    print(
        f"rebuilt {pack['use_case']} training data (training sheet {pack['data']['training_sheet_version']}) "
        f"into {result.manifest.directory}"
    )
    for key, sha in sorted(result.actual.items()):
        print(f"  {'same' if result.expected.get(key) == sha else 'DIFFERENT'}  {key}  {sha[:16]}")
    if not result.identical:
        print(f"{len(result.mismatches)} files differ from the pack: {', '.join(result.mismatches)}", file=sys.stderr)
        return 1
    print(f"all {len(result.actual)} files are byte-identical to the pack")
    return 0


def add_parsers(sub) -> None:
    rebuild = sub.add_parser(
        "rebuild-training-data", help="rebuild a trained model's training data from its reproducibility pack"
    )
    source = rebuild.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", help="the MLflow run of the trained model")
    source.add_argument("--pack", help="a reproducibility pack (pack.json) downloaded from MLflow")
    rebuild.add_argument("--out", required=True, help="directory to write the rebuilt export into")
    rebuild.set_defaults(func=cmd_rebuild)
