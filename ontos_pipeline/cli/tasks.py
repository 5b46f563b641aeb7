"""`ontos tasks list | show | start | complete`: annotation tasks made from gap reports."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC

from ontos_pipeline.platform.console import format_table
from ontos_pipeline.settings import load_settings
from ontos_pipeline.specs import load_use_cases


def _when(value) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def cmd_tasks(args: argparse.Namespace) -> int:
    from ontos_pipeline.improve import tasks

    settings = load_settings()
    lakehouse = settings.local_lakehouse()
    if args.action == "list":
        rows = tasks.list_tasks(lakehouse, args.use_case, args.status)
        print(
            format_table(
                ["id", "use case", "priority", "status", "items", "assignee", "created (UTC)", "gap"],
                [
                    [
                        t["task_id"],
                        t["use_case"],
                        t["priority"],
                        t["status"],
                        len(t["item_refs"] or []),
                        t["assignee"] or "-",
                        _when(t["created_at"]),
                        t["gap_id"],
                    ]
                    for t in rows
                ],
            )
            if rows
            else "no tasks"
        )
        return 0
    try:
        if args.action == "show":
            task = tasks.get_task(lakehouse, args.task_id)
        else:
            to = "in_progress" if args.action == "start" else "completed"
            task = tasks.transition(
                lakehouse,
                args.task_id,
                to,
                getattr(args, "assignee", None)
                or (os.environ.get("ONTOS_USER") or getpass.getuser() if to == "in_progress" else None),
            )
    except tasks.TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = load_use_cases(settings.use_cases_dir)
    spec = specs.get(task["use_case"])
    if args.action == "show":
        print(
            f"task {task['task_id']} ({task['use_case']}, gap {task['gap_id']}): {task['status']}, priority "
            f"{task['priority']}, assignee {task['assignee'] or '-'}, created {_when(task['created_at'])}, "
            f"started {_when(task['started_at'])}, completed {_when(task['completed_at'])}"
        )
        print(f"\n{task['instructions']}\n")
        print(f"items to label ({len(task['item_refs'])}, most uncertain first):")
        for ref in task["item_refs"]:
            print(f"  {ref}")
        print(
            f"\nsubmit: uv run ontos labels import labels.csv --use-case {task['use_case']}   "
            "# CSV header: item_ref,label"
        )
        if spec is not None:
            progress = tasks.label_progress(lakehouse, spec, task)
            print(f"labelled so far: {progress['labelled']} of {progress['items']} items")
        return 0
    if args.action == "start":
        print(
            f"task {task['task_id']} is now in_progress (assignee {task['assignee'] or '-'}); "
            f"`ontos tasks show {task['task_id']}` lists its items"
        )
        return 0
    message = f"task {task['task_id']} is now completed"
    if spec is None:
        print(f"{message}; use case {task['use_case']!r} is not in {settings.use_cases_dir}, labels not counted")
        return 0
    progress = tasks.label_progress(lakehouse, spec, task)
    print(
        f"{message}: {progress['labelled']} of {progress['items']} items have a canonical label "
        f"({progress['labelled_since_created']} labelled since the task was created)"
    )
    if progress["missing"]:
        shown = ", ".join(progress["missing"][:10]) + (" …" if len(progress["missing"]) > 10 else "")
        print(
            f"still without a canonical label: {shown} (imported label files count once canonical_labels is "
            "materialized again)"
        )
    return 0


def add_parsers(sub) -> None:
    tk = sub.add_parser("tasks", help="annotation tasks from gap reports: list, show, start, complete")
    tk_sub = tk.add_subparsers(dest="action", required=True)
    ls = tk_sub.add_parser("list", help="tasks, most urgent first")
    ls.add_argument("use_case", nargs="?", help="only this use case")
    ls.add_argument("--status", choices=("pending", "in_progress", "completed"))
    ls.set_defaults(func=cmd_tasks)
    show = tk_sub.add_parser("show", help="a task's instructions and the items to label")
    show.add_argument("task_id", help="the task id (or a unique prefix)")
    show.set_defaults(func=cmd_tasks)
    start = tk_sub.add_parser("start", help="pending -> in_progress")
    start.add_argument("task_id", help="the task id (or a unique prefix)")
    start.add_argument("--assignee", help="who works on it (default: $ONTOS_USER or the login name)")
    start.set_defaults(func=cmd_tasks)
    done = tk_sub.add_parser("complete", help="in_progress -> completed; reports how many items are labelled")
    done.add_argument("task_id", help="the task id (or a unique prefix)")
    done.set_defaults(func=cmd_tasks)
