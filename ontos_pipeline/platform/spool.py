"""A durable spool: rows on their way to a table, acknowledged on one `write()` and committed in batches.

Write path: the rows of one call become JSON lines appended to this process's active file with a single `write()`
system call, so rows acknowledged before a crash survive it. A flusher thread (every `flush_seconds`, or sooner
when `flush_rows` are pending) fsyncs and renames the active file to a numbered segment, then hands each segment's
rows to `commit` and deletes the segment. A torn last line was never acknowledged and is skipped.

Each process owns its folder under `root` through an exclusive lock on `owner.lock`; `open()` first commits the
folders whose owner is gone (a killed process), with `recovered=True` so the callback can skip rows already
committed before the kill. The inference log and the guardrails' review queue both ride on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

Commit = Callable[[list[dict], bool], int]  # (rows, recovered) -> rows (or units) committed


class Spool:
    def __init__(
        self,
        root: Path | str,
        commit: Commit,
        name: str,
        flush_seconds: float = 1.0,
        flush_rows: int | None = None,
    ):
        self.root, self.commit, self.name = Path(root), commit, name
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        self.dir = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()  # guards the active file and `pending`
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake, self._stop = threading.Event(), threading.Event()
        self._fd: int | None = None
        self._owner = None
        self._segment = 0
        self._thread: threading.Thread | None = None
        self.pending = 0  # rows written, not committed yet
        self.committed = 0  # what `commit` returned for this process's own segments

    @property
    def _active(self) -> Path:
        return self.dir / "active.jsonl"

    def open(self) -> int:
        """Claim a folder, commit the folders of dead processes, start the flusher; returns what was recovered."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._owner = open(self.dir / "owner.lock", "a")  # noqa: SIM115 - held for the process lifetime
        fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        recovered = recover(self.root, self.commit)
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._thread = threading.Thread(target=self._run, name=f"ontos-{self.name.replace(' ', '-')}", daemon=True)
        self._thread.start()
        return recovered

    def close(self) -> None:
        """Flush everything and release the folder (kept, with an error logged, if rows could not be committed)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        for f in self.dir.glob("*.jsonl"):
            if f.stat().st_size == 0:
                f.unlink()
        if self._owner is not None:
            self._owner.close()
            (self.dir / "owner.lock").unlink(missing_ok=True)
            try:
                self.dir.rmdir()
            except OSError:
                log.error("%s spool %s kept: it still holds rows", self.name, self.dir)

    def write(self, rows: Sequence[Mapping]) -> None:
        """Append rows durably (they survive the process being killed once this returns)."""
        if not rows:
            return
        data = "".join(json.dumps(dict(r), default=_default, ensure_ascii=False) + "\n" for r in rows).encode()
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"the {self.name} is not open")
            os.write(self._fd, data)
            self.pending += len(rows)
            full = self.flush_rows is not None and self.pending >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Commit what was written; returns the sum of what `commit` returned."""
        with self._flush_lock:
            with self._lock:
                if self.pending and self._fd is not None:
                    os.fsync(self._fd)
                    os.close(self._fd)
                    self._segment += 1
                    os.replace(self._active, self.dir / f"segment-{self._segment:08d}.jsonl")
                    self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    self.pending = 0
            done = sum(_commit_file(segment, self.commit, False) for segment in sorted(self.dir.glob("segment-*")))
            self.committed += done
            return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the spool keeps the rows; the next flush retries
                log.error("%s flush failed (rows stay in %s): %s", self.name, self.dir, exc)


def recover(root: Path | str, commit: Commit) -> int:
    """Commit the spool folders under `root` whose owner process is gone (their lock is free)."""
    recovered = 0
    for folder in sorted(p for p in Path(root).glob("*") if p.is_dir()):
        lock_path = folder / "owner.lock"
        with open(lock_path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process owns it (this one included)
            for f in sorted(folder.glob("segment-*.jsonl")) + sorted(folder.glob("active.jsonl")):
                recovered += _commit_file(f, commit, True)
        lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
    return recovered


def _commit_file(segment: Path, commit: Commit, recovered: bool) -> int:
    with open(segment, "rb") as handle:
        rows = [json.loads(line) for line in handle if line.endswith(b"\n")]  # a torn line was never acknowledged
    done = commit(rows, recovered) if rows else 0
    segment.unlink()
    return done


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
