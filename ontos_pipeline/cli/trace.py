"""`ontos trace REQUEST_ID`: a served answer, the model version and training run behind it, its data versions, the
label rows of the item (or of the nearest training items) and the feedback on it."""

from __future__ import annotations

import argparse
import json
import sys

from ontos_pipeline.settings import load_settings
from ontos_pipeline.specs import load_use_cases


def cmd_trace(args: argparse.Namespace) -> int:
    from ontos_pipeline.deploy.trace import UnknownRequest, format_trace, trace_request
    from ontos_pipeline.platform.spark_session import get_spark

    if args.k < 1:
        print("--k must be at least 1", file=sys.stderr)
        return 2
    settings = load_settings()
    specs = load_use_cases(settings.use_cases_dir)
    try:
        trace = trace_request(
            get_spark(), settings.local_lakehouse(), settings.local_model_store(), specs, args.request_id, k=args.k
        )
    except UnknownRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(trace.to_json(), indent=2, ensure_ascii=False) if args.json else format_trace(trace))
    return 0


def add_parsers(sub) -> None:
    trace = sub.add_parser(
        "trace",
        help="trace a served answer to its model version, training run, data versions, labels and feedback",
    )
    trace.add_argument("request_id", help="the X-Request-Id of an `ontos serve` answer (see the inference log)")
    trace.add_argument(
        "--k", type=int, default=5, help="nearest training items shown when the request names no labelled item"
    )
    trace.add_argument("--json", action="store_true", help="print the trace as JSON (for machines)")
    trace.set_defaults(func=cmd_trace)
