"""The inference log: every answered request becomes one row of `inference_log`, exactly once.

Write path (per request, before the response is sent): one JSON line appended to this process's spool file with a
single `write()` system call, so an acknowledged request survives a killed process. A flusher thread commits the
spool to the Delta table in batches (every `flush_seconds` or `flush_rows`), fsyncs, then deletes the flushed
segment; shutdown flushes what is left. A process killed in between leaves its spool behind: the next serving
process (or `recover()`) commits it, skipping request ids already in the table, so nothing is lost or doubled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import uuid
from datetime import datetime
from pathlib import Path

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse

INFERENCE_LOG = tables.INFERENCE_LOG
log = logging.getLogger(__name__)


class InferenceLog:
    def __init__(self, lakehouse: Lakehouse, spool_root: Path | str, flush_seconds: float = 1.0, flush_rows: int = 500):
        self.lakehouse, self.root = lakehouse, Path(spool_root)
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        self.dir = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()  # guards the active file and the counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake, self._stop = threading.Event(), threading.Event()
        self._fd: int | None = None
        self._owner = None
        self._segment = 0
        self.pending = 0
        self.logged = 0
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def open(self) -> int:
        """Claim a spool folder, commit spools left by dead processes; returns how many rows were recovered."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._owner = open(self.dir / "owner.lock", "a")  # noqa: SIM115 - held for the process lifetime
        fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        recovered = recover(self.lakehouse, self.root)
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._thread = threading.Thread(target=self._run, name="ontos-inference-log", daemon=True)
        self._thread.start()
        return recovered

    def close(self) -> None:
        """Flush everything and release the spool folder."""
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
                log.error("inference log spool %s kept: it still holds rows", self.dir)

    # -- writing -----------------------------------------------------------------------------------------------
    @property
    def _active(self) -> Path:
        return self.dir / "active.jsonl"

    def write(self, row: dict) -> None:
        """Append one row durably (survives the process being killed once this returns)."""
        line = (json.dumps(row, default=_default, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise RuntimeError("the inference log is not open")
            os.write(self._fd, line)
            self.pending += 1
            full = self.pending >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Commit the pending rows to the Delta table; returns how many were committed."""
        with self._flush_lock:
            with self._lock:
                if self.pending and self._fd is not None:
                    os.fsync(self._fd)
                    os.close(self._fd)
                    self._segment += 1
                    os.replace(self._active, self.dir / f"segment-{self._segment:08d}.jsonl")
                    self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    self.pending = 0
            committed = 0
            for segment in sorted(self.dir.glob("segment-*.jsonl")):
                committed += _commit(self.lakehouse, segment, dedupe=False)
            self.logged += committed
            return committed

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the spool keeps the rows; the next flush retries
                log.error("inference log flush failed (rows stay in %s): %s", self.dir, exc)


def recover(lakehouse: Lakehouse, spool_root: Path | str) -> int:
    """Commit the spools of serving processes that are gone (their owner lock is free)."""
    recovered = 0
    for folder in sorted(p for p in Path(spool_root).glob("*") if p.is_dir()):
        lock_path = folder / "owner.lock"
        with open(lock_path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process owns it
            for f in sorted(folder.glob("segment-*.jsonl")) + sorted(folder.glob("active.jsonl")):
                recovered += _commit(lakehouse, f, dedupe=True)
        lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
    return recovered


def _commit(lakehouse: Lakehouse, segment: Path, dedupe: bool) -> int:
    rows = []
    with open(segment, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):  # a torn last line was never acknowledged
                rows.append(json.loads(line))
    if dedupe and rows:
        ids = {r["request_id"] for r in rows}
        seen = {r["request_id"] for r in lakehouse.records(INFERENCE_LOG, columns=["request_id"])}
        rows = [r for r in rows if r["request_id"] not in seen & ids]
    for r in rows:
        r["request_time"] = datetime.fromisoformat(r["request_time"])
    if rows:
        lakehouse.append_records(INFERENCE_LOG, rows)
    segment.unlink()
    return len(rows)


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
