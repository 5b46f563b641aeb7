"""The annotation_tasks table's shared terms: statuses, the open ones, items per task and the id scheme.

Tasks are planned by the improve stage (gap reports), queued by endpoint guardrails (abstained answers) and
completed by labelling; ids are deterministic in the gap and how many tasks it had before, so re-running a planner
plans the same tasks.
"""

from __future__ import annotations

import hashlib

from ontos_pipeline.platform import tables

TASKS = tables.ANNOTATION_TASKS
STATUSES = ("pending", "in_progress", "completed")
OPEN = ("pending", "in_progress")
TASK_ITEMS = 25  # items per task


def task_id(gap_id: str, sequence: int) -> str:
    """The id of the gap's `sequence`-th task (1-based)."""
    return "T" + hashlib.sha1(f"{gap_id}\x1f{sequence}".encode()).hexdigest()[:10]
