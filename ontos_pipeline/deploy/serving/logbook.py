"""The inference log: every answered request becomes one row of `inference_log`, exactly once.

Rows ride on a `platform.spool.Spool`: one JSON line per request, appended with a single `write()` before the
response is sent (an acknowledged request survives a killed process), committed to the Delta table in batches
(every `flush_seconds` or `flush_rows`). A process killed in between leaves its spool behind: the next serving
process (or `recover()`) commits it, skipping request ids already in the table, so nothing is lost or doubled.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from pathlib import Path

from ontos_pipeline.platform import spool, tables
from ontos_pipeline.platform.lakehouse import Lakehouse

INFERENCE_LOG = tables.INFERENCE_LOG


class InferenceLog:
    def __init__(self, lakehouse: Lakehouse, spool_root: Path | str, flush_seconds: float = 1.0, flush_rows: int = 500):
        self.lakehouse, self.root, self.flush_seconds = lakehouse, Path(spool_root), flush_seconds
        self._spool = spool.Spool(self.root, partial(_commit, lakehouse), "inference log", flush_seconds, flush_rows)

    @property
    def dir(self) -> Path:
        return self._spool.dir

    @property
    def pending(self) -> int:
        return self._spool.pending

    @property
    def logged(self) -> int:
        return self._spool.committed

    def open(self) -> int:
        """Claim a spool folder, commit spools left by dead processes; returns how many rows were recovered."""
        return self._spool.open()

    def close(self) -> None:
        """Flush everything and release the spool folder."""
        self._spool.close()

    def write(self, row: dict) -> None:
        """Append one row durably (survives the process being killed once this returns)."""
        self._spool.write([row])

    def flush(self) -> int:
        """Commit the pending rows to the Delta table; returns how many were committed."""
        return self._spool.flush()


def recover(lakehouse: Lakehouse, spool_root: Path | str) -> int:
    """Commit the spools of serving processes that are gone (their owner lock is free)."""
    return spool.recover(spool_root, partial(_commit, lakehouse))


def _commit(lakehouse: Lakehouse, rows: list[dict], recovered: bool) -> int:
    if recovered:  # a killed process may have committed some of its rows before it died
        ids = {r["request_id"] for r in rows}
        seen = {r["request_id"] for r in lakehouse.records(INFERENCE_LOG, columns=["request_id"])}
        rows = [r for r in rows if r["request_id"] not in seen & ids]
    for r in rows:
        r["request_time"] = datetime.fromisoformat(r["request_time"])
    if rows:
        lakehouse.append_records(INFERENCE_LOG, rows)
    return len(rows)
