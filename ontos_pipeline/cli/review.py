"""`ontos review` and `ontos labels import`: the human labelling steps (delta-rs reads and one append: no Spark,
no Dagster)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from ontos_pipeline.cli.context import Context, person, short
from ontos_pipeline.platform.console import format_table


def cmd_review(args: argparse.Namespace) -> int:
    """List, show and decide on training-sheet items."""
    from ontos_pipeline.generate import review
    from ontos_pipeline.generate.qa_pairs import review_history, training_sheet_rows, training_sheet_version

    ctx = Context.load()
    lakehouse, spec = ctx.lakehouse, ctx.spec(args.use_case)
    sheet_id = spec.training_sheet_id
    if args.action == "list":
        rows = training_sheet_rows(
            lakehouse,
            sheet_id,
            status=args.status,
            limit=args.limit,
            columns=["status", "response_source", "confidence", "split", "response"],
        )
        print(f"training sheet {sheet_id} version {training_sheet_version(lakehouse, sheet_id)}")
        print(
            format_table(
                ["item_ref", "status", "source", "confidence", "split", "response"],
                [
                    [
                        r["item_ref"],
                        r["status"],
                        r["response_source"] or "-",
                        "-" if r["confidence"] is None else f"{r['confidence']:.3f}",
                        r["split"],
                        short(r["response"]),
                    ]
                    for r in rows
                ],
            )
        )
        return 0
    if args.action == "show":
        found = training_sheet_rows(lakehouse, sheet_id, items=args.items)
        if not found:
            raise review.ReviewError(f"item {args.items[0]!r} is not in training sheet {sheet_id}")
        row = found[0]
        for message in json.loads(row["messages"]):
            print(f"[{message['role']}]\n{message['content']}\n")
        confidence = "" if row["confidence"] is None else f" (confidence {row['confidence']:.3f})"
        print(
            f"[response] {row['response']}\nstatus {row['status']}, source {row['response_source']}{confidence}, split "
            f"{row['split']}, version {row['version']}, prohibited uses {list(row['prohibited_uses'] or [])}"
        )
        for h in review_history(lakehouse, sheet_id, args.items[0]):
            print(
                f"  {h['created_at']:%Y-%m-%d %H:%M} {h['reviewer']}: {h['decision']} {h['label_data'] or ''}"
                f" {h['comment'] or ''}"
            )
        return 0
    if args.action == "approve" and (args.proposed or args.min_confidence is not None or args.dry_run):
        return _approve_proposed(args, ctx, spec)
    decisions = [review.Decision(item, args.action, args.label, args.comment) for item in args.items]
    if args.file:
        decisions += review.read_decisions(Path(args.file), default_decision=args.action)
    ids = review.record_decisions(lakehouse, spec, decisions, person(args.reviewer), args.version)
    print(
        f"recorded {len(ids)} decision(s) on {sheet_id}; they apply at the next materialization "
        "of canonical_labels and training_sheet"
    )
    return 0


def _approve_proposed(args: argparse.Namespace, ctx: Context, spec) -> int:
    """`ontos review approve USE_CASE --proposed --min-confidence X [--dry-run]`: bulk-approve model proposals."""
    from ontos_pipeline.generate import review

    if not args.proposed:
        raise review.ReviewError("--min-confidence and --dry-run go with --proposed; nothing was recorded")
    if args.items or args.file or args.version:
        raise review.ReviewError(
            "--proposed approves the pending model proposals it selects: give no ITEM_REF, --file or --version "
            "with it; nothing was recorded"
        )
    if args.min_confidence is None:
        raise review.ReviewError("--proposed needs --min-confidence (0..1), e.g. 0.9; nothing was recorded")
    result = review.approve_proposals(
        ctx.lakehouse, spec, args.min_confidence, person(args.reviewer), dry_run=args.dry_run, comment=args.comment
    )
    n, where = len(result.items), f"{result.training_sheet_id} version {result.version}"
    if result.already_decided:
        print(f"{result.already_decided} proposal(s) at or above the threshold already have a decision; skipped")
    if not n:
        print(
            f"nothing left to approve: no undecided pending model proposal with confidence >= "
            f"{result.min_confidence} on {where}; nothing was recorded (proposals appear once a champion is served "
            "and training_sheet is materialized again)"
        )
        return 0
    if args.dry_run:
        print(f"dry run: {n} pending model proposal(s) with confidence >= {result.min_confidence} on {where}")
        print(format_table(["confidence", "items"], [[band, count] for band, count in result.by_band.items()]))
        values = list(result.by_value.items())
        shown = [[short(value), count] for value, count in values[:10]]
        if len(values) > 10:
            shown.append([f"... {len(values) - 10} more values", sum(c for _, c in values[10:])])
        print(format_table(["proposed", "items"], shown))
        print("nothing was recorded")
        return 0
    print(
        f"approved {len(result.review_ids)} model proposal(s) with confidence >= {result.min_confidence} on {where}; "
        "they become canonical labels (source review) at the next materialization of canonical_labels and "
        "training_sheet"
    )
    return 0


def cmd_labels_import(args: argparse.Namespace) -> int:
    """Validate a CSV/JSONL label file and place it in the use case's inbox (atomically)."""
    from ontos_pipeline.label.label_files import inbox_dir, parse_label_file, response_validator, validate_label

    ctx = Context.load()
    spec, source = ctx.spec(args.use_case), Path(args.file)
    if source.suffix not in (".csv", ".jsonl") or not source.is_file():
        print(f"error: {source}: expected an existing .csv or .jsonl file", file=sys.stderr)
        return 2
    validator = response_validator(spec.template.response_schema)
    rows = parse_label_file(source, spec.template.response_kind)
    problems = [
        r["error"] or f"{r['source_ref']}: item {r['item_ref']!r}: label {reason}"
        for r in rows
        if r["error"] or (reason := validate_label(validator, r["label_data"])[0])
    ]
    print(f"{source.name}: {len(rows)} labels, {len(rows) - len(problems)} valid, {len(problems)} invalid")
    for problem in problems[:20]:
        print(f"  {problem}", file=sys.stderr)
    if problems and not args.allow_rejects:
        print(
            "nothing imported: fix the lines above, or pass --allow-rejects to import the file and keep the "
            "invalid labels in label_rejects with their reasons",
            file=sys.stderr,
        )
        return 2
    content = source.read_bytes()
    # named by content: two files called labels.csv from two folders both stay; the same file again is a no-op
    digest = hashlib.sha256(content).hexdigest()[:12]
    target = inbox_dir(ctx.lakehouse, spec.name) / f"{source.stem}-{digest}{source.suffix}"
    if target.exists():
        print(f"already imported as {target}; nothing changed")
        return 0
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, target)
    print(f"imported into {target}; it is merged at the next materialization of canonical_labels ({spec.name})")
    return 0


def add_parsers(sub) -> None:
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
            p.add_argument(
                "--label", help="the corrected label as JSON (edit)" if action == "edit" else argparse.SUPPRESS
            )
            if action == "approve":
                p.add_argument(
                    "--proposed",
                    action="store_true",
                    help="approve every pending model proposal with confidence >= --min-confidence",
                )
                p.add_argument("--min-confidence", type=float, help="the confidence threshold of --proposed (0..1)")
                p.add_argument("--dry-run", action="store_true", help="with --proposed: count, record nothing")
        p.set_defaults(func=cmd_review, label=None, proposed=False, min_confidence=None, dry_run=False)

    labels = sub.add_parser("labels", help="label files")
    labels_sub = labels.add_subparsers(dest="action", required=True)
    imp = labels_sub.add_parser("import", help="validate a CSV/JSONL label file and put it in the inbox")
    imp.add_argument("file")
    imp.add_argument("--use-case", required=True)
    imp.add_argument(
        "--allow-rejects",
        action="store_true",
        help="import even if some labels are invalid (they are kept in label_rejects)",
    )
    imp.set_defaults(func=cmd_labels_import)
