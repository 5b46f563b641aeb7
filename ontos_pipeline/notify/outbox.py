"""The durable outbox: deliveries (one notice for one channel) that have not succeeded yet, and the ledger of those
that have, as two JSONL files in one folder (`<ONTOS_HOME>/files/notifications` locally).

Every change rewrites a file atomically (a temporary file in the same folder, fsync, rename) under an exclusive
lock on the folder, so the runs and the sensor daemon that share an ONTOS_HOME never lose or double a line. A
delivery's id is `<notice key>|<target id>`: the ledger makes a notice reach each channel once, whichever process
queued or retried it. Ledger lines older than `KEEP_DELIVERED` are dropped when the ledger is rewritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ontos_pipeline.platform.files import BadLine, jsonl_records

PENDING, DELIVERED = "outbox.jsonl", "delivered.jsonl"
KEEP_DELIVERED = timedelta(days=30)
_THREAD_LOCK = threading.RLock()  # flock is per open file: threads of one process queue here first


@dataclass
class State:
    """The outbox as read under the lock; `Outbox.transaction` writes back what changed."""

    pending: list[dict]
    delivered: dict[str, str]  # delivery id -> delivered_at (ISO)
    bad_lines: list[str] = field(default_factory=list)  # `file:line` of lines that were not JSON (dropped)
    changed: bool = False

    def is_known(self, delivery_id: str) -> bool:
        return delivery_id in self.delivered or any(p["id"] == delivery_id for p in self.pending)


class Outbox:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    @contextmanager
    def transaction(self) -> Iterator[State]:
        """The outbox, locked against every other process and thread, written back on a clean exit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK, open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                if state.changed or state.bad_lines:
                    self._write(state)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def has_pending(self) -> bool:
        path = self.folder / PENDING
        return path.exists() and path.stat().st_size > 0

    def pending(self) -> list[dict]:
        with self.transaction() as state:
            return list(state.pending)

    def delivered(self) -> dict[str, str]:
        with self.transaction() as state:
            return dict(state.delivered)

    def _lines(self, name: str, bad: list[str]) -> list[dict]:
        path = self.folder / name
        if not path.exists():
            return []
        rows = []
        for where, value in jsonl_records(path.read_text(encoding="utf-8").splitlines(), name, ValueError, False):
            if isinstance(value, BadLine) or not isinstance(value, dict) or "id" not in value:
                bad.append(where)  # a torn or hand-edited line: dropped, and said so by the notifier
            else:
                rows.append(value)
        return rows

    def _read(self) -> State:
        bad: list[str] = []
        pending = self._lines(PENDING, bad)
        delivered = {str(r["id"]): str(r.get("delivered_at", "")) for r in self._lines(DELIVERED, bad)}
        return State(pending, delivered, bad)

    def _write(self, state: State) -> None:
        horizon = (datetime.now(UTC) - KEEP_DELIVERED).isoformat()
        kept = {k: v for k, v in state.delivered.items() if v >= horizon}
        _atomic_jsonl(self.folder / PENDING, state.pending)
        _atomic_jsonl(self.folder / DELIVERED, [{"id": k, "delivered_at": v} for k, v in kept.items()])


def _atomic_jsonl(path: Path, rows: list[dict]) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, sort_keys=True, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
