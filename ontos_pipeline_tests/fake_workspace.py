"""A fake Databricks workspace on 127.0.0.1 speaking the REST calls of databricks-sdk 0.60 and dagster-databricks Pipes.

`FakeWorkspace` is a context manager running a `ThreadingHTTPServer` in a background thread. It records every
request (`requests`, `calls()`), stores files under `root` and really executes submitted `spark_python_task` runs as
local subprocesses. Paths, methods, query parameters, bodies and answers follow the SDK's generated clients
(`databricks/sdk/service/{files,jobs,serving,catalog,compute}.py`):

- DBFS 2.0: `POST /api/2.0/dbfs/{mkdirs,put,create,add-block,close,delete,move}` (JSON bodies),
  `GET /api/2.0/dbfs/{read,get-status,list}?path=...`. A DBFS path `/tmp/x` or `dbfs:/tmp/x` lives at
  `root/"dbfs/tmp/x"`. `read` returns at most `length` bytes (default 0.5 MB, at most 1 MB), base64 in `data`.
- Files API: `PUT|GET|HEAD|DELETE /api/2.0/fs/files{path}` (raw bytes, `overwrite` query) and
  `PUT|GET|HEAD|DELETE /api/2.0/fs/directories{path}`; only `/Volumes/<catalog>/<schema>/<volume>/...` paths.
  `/Volumes/a/b/c/x` lives at `root/"Volumes/a/b/c/x"`.
- Jobs 2.2 (2.0 and 2.1 accepted too): `POST jobs/runs/submit`, `GET jobs/runs/get`, `POST jobs/runs/cancel`,
  `GET jobs/runs/get-output` (task run ids only, as on Databricks); `GET /api/2.1/clusters/get` for existing clusters.
- Serving 2.0: `POST|GET /api/2.0/serving-endpoints`, `GET|DELETE /api/2.0/serving-endpoints/{name}`,
  `PUT .../{name}/config`, `PUT .../{name}/ai-gateway`. Updates are applied at once (never `pending_config`). An
  AI Gateway config (at create or PUT) is checked as the service does: PII behaviour NONE, BLOCK or MASK; rate
  limits with integer `calls`, `renewal_period` minute and a known `key`.
- Unity Catalog 2.1: `GET|DELETE /api/2.1/unity-catalog/models/{full_name}`,
  `GET|PUT|DELETE /api/2.1/unity-catalog/models/{full_name}/aliases/{alias}`, backed by `models`.

Errors have the Databricks body `{"error_code": ..., "message": ...}`; the SDK maps them to `databricks.sdk.errors`
classes by error code, then by status. Every request needs `Authorization: Bearer <token>` (else 401).

A submitted run's task runs `sys.executable <python_file> *parameters` with cwd `root/"runs"/<run_id>`, output to
`root/"runs"/<run_id>.log`, and the environment `os.environ` + `new_cluster.spark_env_vars` + `cluster_env` +
`ONTOS_FUSE_ROOT=<root>` (code in the run finds `/Volumes/...` at `$ONTOS_FUSE_ROOT/Volumes/...` and `/dbfs/...` at
`$ONTOS_FUSE_ROOT/dbfs/...`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DBFS_READ_DEFAULT = 512 * 1024
DBFS_MAX_BLOCK = 1024 * 1024
LOG_TAIL_LINES = 20
OUTCOMES = ("run", "fail", "hang", "silent", "internal_error")
TERMINAL = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")
_DEFAULT_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")


class _Headers(dict):
    """Request headers with lower-case keys; lookups ignore case."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


@dataclass
class Recorded:
    method: str
    path: str  # URL-decoded, without the query string
    query: dict[str, str]
    body: object  # parsed JSON if JSON, else raw bytes, None if empty
    headers: dict[str, str]  # lower-case keys; lookups ignore case
    status: int | None = None  # the status the fake answered with (set once answered)


class ApiError(Exception):
    """Raised by a route: answered as a Databricks error body."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {error_code}: {message}")
        self.status, self.error_code, self.message, self.headers = status, error_code, message, headers or {}


@dataclass
class _Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] | None = None

    @classmethod
    def json(cls, value: object, status: int = 200) -> _Answer:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


@dataclass
class _Failure:
    method: str
    regex: re.Pattern
    status: int
    remaining: int
    error_code: str
    message: str
    retry_after: int | None


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeDatabricks/0.60"
    timeout = 60  # idle keep-alive connections end
    workspace: FakeWorkspace

    def do_GET(self) -> None:
        self.workspace._serve(self)

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeWorkspace:
    """A local fake of the Databricks REST API; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        root: Path,
        token: str = "dapi-test-token",
        cluster_env: dict[str, str] | None = None,
        run_seconds_pending: float = 0.0,
    ):
        self.root = Path(root)
        self.token = token
        self.cluster_env = dict(cluster_env or {})
        self.run_seconds_pending = run_seconds_pending
        self.url = ""
        self.requests: list[Recorded] = []
        self.runs: dict[int, dict] = {}
        self.endpoints: dict[str, dict] = {}
        self.models: dict[str, dict] = {}  # full_name -> {"aliases": {alias: version}, optional "versions": [...]}
        self.clusters: dict[str, dict] = {}  # cluster_id -> clusters/get answer; unknown ids get a running cluster
        self.server_errors: list[str] = []  # bugs in the fake itself (answered as 500 FAKE_WORKSPACE_BUG)
        self._lock = threading.RLock()
        self._failures: list[_Failure] = []
        self._outcomes: list[str] = []
        self._next_id = 1000
        self._dbfs_handles: dict[int, dict] = {}
        self._task_runs: dict[int, tuple[int, int]] = {}  # task run id -> (run id, task index)
        self._idempotency: dict[str, int] = {}
        self._procs: dict[int, list[subprocess.Popen | None]] = {}
        self._cancel: dict[int, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._endpoint_meta: dict[str, dict] = {}
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._routes: list[tuple[str, re.Pattern, Callable[..., _Answer]]] = self._make_routes()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> FakeWorkspace:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        (self.root / "dbfs").mkdir(parents=True, exist_ok=True)
        (self.root / "Volumes").mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        handler = type("FakeWorkspaceHandler", (_Handler,), {"workspace": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False  # idle keep-alive connections must not block stop()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-databricks", daemon=True
        )
        self._server_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            events = list(self._cancel.values())
            procs = [p for ps in self._procs.values() for p in ps if p is not None]
        for event in events:
            event.set()
        for proc in procs:
            _kill_group(proc)
        for thread in list(self._threads):
            thread.join(timeout=5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- test controls -----------------------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int = 1,
        error_code: str | None = None,
        message: str = "fake workspace: injected failure",
        retry_after: int | None = 0,
    ) -> None:
        """The next `times` requests with this method whose path matches `re.search(path_regex)` get `status`
        with a Databricks error body. `error_code` defaults to the usual code of the status (503:
        TEMPORARILY_UNAVAILABLE, ...). 429 and 503 answers carry `Retry-After: <retry_after>` unless it is None
        (the SDK waits that long plus up to 1 s, or 1 s plus up to 1 s without the header)."""
        with self._lock:
            self._failures.append(
                _Failure(
                    method.upper(),
                    re.compile(path_regex),
                    status,
                    times,
                    error_code or _DEFAULT_CODES.get(status, "UNKNOWN"),
                    message,
                    retry_after,
                )
            )

    def script_runs(self, *outcomes: str) -> None:
        """Queue behaviours for the next submitted runs: "run" (execute; the default when the queue is empty),
        "fail", "hang", "silent" or "internal_error"."""
        for outcome in outcomes:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown run outcome {outcome!r}; expected one of {OUTCOMES}")
        with self._lock:
            self._outcomes.extend(outcomes)

    def calls(self, path_regex: str = "", method: str | None = None) -> list[Recorded]:
        pattern = re.compile(path_regex)
        with self._lock:
            return [
                r for r in self.requests if pattern.search(r.path) and (method is None or r.method == method.upper())
            ]

    def wait_run(self, run_id: int, timeout: float = 10.0) -> dict:
        """Wait (without HTTP) until a run is terminal; returns its state dict."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                state = dict(self.runs[run_id]["state"])
            if state["life_cycle_state"] in TERMINAL:
                return state
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise TimeoutError(f"run {run_id} still {state['life_cycle_state']} after {timeout} s")

    # -- HTTP plumbing -----------------------------------------------------------------------------------------
    def _serve(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = _Headers((k.lower(), v) for k, v in h.headers.items())
        raw = _read_body(h)
        record = Recorded(h.command, path, query, _parse_body(raw, headers.get("content-type", "")), headers)
        with self._lock:
            self.requests.append(record)
        try:
            answer = self._answer(record, raw)
        except ApiError as e:
            answer = _Answer.json({"error_code": e.error_code, "message": e.message}, e.status)
            answer.headers.update(e.headers)
        except Exception as e:  # a bug in the fake: visible to the test, never retried by the SDK
            self.server_errors.append(f"{h.command} {path}: {e!r}")
            answer = _Answer.json({"error_code": "FAKE_WORKSPACE_BUG", "message": f"fake workspace bug: {e!r}"}, 500)
        record.status = answer.status
        h.send_response(answer.status)
        headers_out = dict(answer.headers or {})
        headers_out.setdefault("Content-Length", str(len(answer.body)))
        for key, value in headers_out.items():
            h.send_header(key, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(answer.body)

    def _answer(self, record: Recorded, raw: bytes) -> _Answer:
        if record.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Credential was not sent or was of an unsupported type for this API. [ReqId: fake]",
            )
        with self._lock:
            failure = next(
                (
                    f
                    for f in self._failures
                    if f.remaining > 0 and f.method == record.method and f.regex.search(record.path)
                ),
                None,
            )
            if failure is not None:
                failure.remaining -= 1
        if failure is not None:
            extra = (
                {"Retry-After": str(failure.retry_after)}
                if failure.retry_after is not None and failure.status in (429, 503)
                else {}
            )
            raise ApiError(failure.status, failure.error_code, failure.message, extra)
        for method, pattern, route in self._routes:
            match = pattern.fullmatch(record.path)
            if match and method == record.method:
                return route(record, raw, *match.groups())
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{record.method} {record.path}'")

    def _make_routes(self) -> list[tuple[str, re.Pattern, Callable[..., _Answer]]]:
        jobs = r"/api/2\.[012]/jobs/runs"
        serving = r"/api/2\.0/serving-endpoints"
        models = r"/api/2\.1/unity-catalog/models/([^/]+)"
        table = [
            ("POST", r"/api/2\.0/dbfs/mkdirs", self._dbfs_mkdirs),
            ("POST", r"/api/2\.0/dbfs/put", self._dbfs_put),
            ("POST", r"/api/2\.0/dbfs/create", self._dbfs_create),
            ("POST", r"/api/2\.0/dbfs/add-block", self._dbfs_add_block),
            ("POST", r"/api/2\.0/dbfs/close", self._dbfs_close),
            ("POST", r"/api/2\.0/dbfs/delete", self._dbfs_delete),
            ("POST", r"/api/2\.0/dbfs/move", self._dbfs_move),
            ("GET", r"/api/2\.0/dbfs/read", self._dbfs_read),
            ("GET", r"/api/2\.0/dbfs/get-status", self._dbfs_get_status),
            ("GET", r"/api/2\.0/dbfs/list", self._dbfs_list),
            ("PUT", r"/api/2\.0/fs/files(/.*)", self._files_upload),
            ("GET", r"/api/2\.0/fs/files(/.*)", self._files_download),
            ("HEAD", r"/api/2\.0/fs/files(/.*)", self._files_metadata),
            ("DELETE", r"/api/2\.0/fs/files(/.*)", self._files_delete),
            ("PUT", r"/api/2\.0/fs/directories(/.*)", self._dir_create),
            ("GET", r"/api/2\.0/fs/directories(/.*)", self._dir_list),
            ("HEAD", r"/api/2\.0/fs/directories(/.*)", self._dir_metadata),
            ("DELETE", r"/api/2\.0/fs/directories(/.*)", self._dir_delete),
            ("POST", jobs + "/submit", self._runs_submit),
            ("GET", jobs + "/get", self._runs_get),
            ("POST", jobs + "/cancel", self._runs_cancel),
            ("GET", jobs + "/get-output", self._runs_get_output),
            ("GET", r"/api/2\.[01]/clusters/get", self._clusters_get),
            ("POST", serving, self._endpoint_create),
            ("GET", serving, self._endpoint_list),
            ("GET", serving + r"/([^/]+)", self._endpoint_get),
            ("DELETE", serving + r"/([^/]+)", self._endpoint_delete),
            ("PUT", serving + r"/([^/]+)/config", self._endpoint_update_config),
            ("PUT", serving + r"/([^/]+)/ai-gateway", self._endpoint_put_ai_gateway),
            ("GET", models, self._model_get),
            ("DELETE", models, self._model_delete),
            ("GET", models + r"/aliases/([^/]+)", self._alias_get),
            ("PUT", models + r"/aliases/([^/]+)", self._alias_set),
            ("DELETE", models + r"/aliases/([^/]+)", self._alias_delete),
        ]
        return [(method, re.compile(regex), route) for method, regex, route in table]

    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    # -- paths -------------------------------------------------------------------------------------------------
    def _local(self, *parts: str) -> Path:
        local = self.root.joinpath(*[p for p in parts if p])
        if not local.resolve().is_relative_to(self.root.resolve()):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Path escapes the workspace root")
        return local

    def dbfs_path(self, path: str) -> Path:
        """Where a DBFS path (`/tmp/x` or `dbfs:/tmp/x`) lives under `root`."""
        return self._local("dbfs", _dbfs_norm(path).lstrip("/"))

    def workspace_path(self, path: str) -> Path:
        """Where a workspace path (`/Volumes/a/b/c/x`) lives under `root`."""
        if not path.startswith("/"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path must be absolute: {path}")
        return self._local(posixpath.normpath(path).lstrip("/"))

    def _volume_path(self, path: str, *, is_file: bool) -> tuple[str, Path]:
        norm = posixpath.normpath(path) if path.startswith("/") else ""
        parts = norm.strip("/").split("/") if norm else []
        if len(parts) < (5 if is_file else 4) or parts[0] != "Volumes" or ".." in parts:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid path {path!r}: expected /Volumes/<catalog>/<schema>/<volume>/...",
            )
        return norm, self._local(*parts)

    # -- DBFS --------------------------------------------------------------------------------------------------
    def _json(self, raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise ApiError(400, "MALFORMED_REQUEST", f"Invalid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "MALFORMED_REQUEST", "Expected a JSON object")
        return body

    def _required(self, body: dict, field: str) -> Any:
        if body.get(field) in (None, ""):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {field}")
        return body[field]

    def _dbfs_info(self, path: str, local: Path) -> dict:
        stat = local.stat()
        is_dir = local.is_dir()
        return {
            "path": _dbfs_norm(path),
            "is_dir": is_dir,
            "file_size": 0 if is_dir else stat.st_size,
            "modification_time": int(stat.st_mtime * 1000),
        }

    def _dbfs_missing(self, path: str) -> ApiError:
        return ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {_dbfs_norm(path)}.")

    def _dbfs_mkdirs(self, record: Recorded, raw: bytes) -> _Answer:
        path = self._required(self._json(raw), "path")
        local = self.dbfs_path(path)
        for parent in [local, *local.parents]:
            if parent.is_file():
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"A file exists at {parent}; cannot create {path}")
            if parent == self.root:
                break
        local.mkdir(parents=True, exist_ok=True)
        return _Answer.json({})

    def _dbfs_target(self, path: str, overwrite: bool) -> Path:
        local = self.dbfs_path(path)
        if local.is_dir():
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"A directory already exists at {_dbfs_norm(path)}")
        if local.exists() and not overwrite:
            raise ApiError(
                400,
                "RESOURCE_ALREADY_EXISTS",
                f"A file or directory already exists at the input path {_dbfs_norm(path)}.",
            )
        local.parent.mkdir(parents=True, exist_ok=True)
        return local

    def _dbfs_put(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        path = self._required(body, "path")
        data = _b64(body.get("contents") or "")
        if len(data) > DBFS_MAX_BLOCK:
            raise ApiError(400, "MAX_BLOCK_SIZE_EXCEEDED", "The contents exceed 1 MB; use create/add-block/close")
        _write_atomic(self._dbfs_target(path, bool(body.get("overwrite"))), data)
        return _Answer.json({})

    def _dbfs_create(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        path = self._required(body, "path")
        local = self._dbfs_target(path, bool(body.get("overwrite")))
        handle = self._new_id()
        with self._lock:
            self._dbfs_handles[handle] = {"local": local, "data": bytearray()}
        return _Answer.json({"handle": handle})

    def _dbfs_handle(self, body: dict) -> dict:
        handle = self._required(body, "handle")
        with self._lock:
            entry = self._dbfs_handles.get(handle)
        if entry is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"The handle {handle} does not exist.")
        return entry

    def _dbfs_add_block(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        entry = self._dbfs_handle(body)
        data = _b64(body.get("data") or "")
        if len(data) > DBFS_MAX_BLOCK:
            raise ApiError(400, "MAX_BLOCK_SIZE_EXCEEDED", "The block exceeds 1 MB")
        with self._lock:
            entry["data"] += data
        return _Answer.json({})

    def _dbfs_close(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        entry = self._dbfs_handle(body)
        with self._lock:
            self._dbfs_handles.pop(body["handle"], None)
        _write_atomic(entry["local"], bytes(entry["data"]))
        return _Answer.json({})

    def _dbfs_delete(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        path = self._required(body, "path")
        local = self.dbfs_path(path)
        if local == self.root / "dbfs":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Cannot delete the DBFS root")
        if local.is_dir():
            if any(local.iterdir()) and not body.get("recursive"):
                raise ApiError(400, "IO_ERROR", f"Directory {_dbfs_norm(path)} is not empty; set recursive")
            shutil.rmtree(local)
        elif local.exists():
            local.unlink()
        return _Answer.json({})

    def _dbfs_move(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        source = self.dbfs_path(self._required(body, "source_path"))
        target = self.dbfs_path(self._required(body, "destination_path"))
        if not source.exists():
            raise self._dbfs_missing(body["source_path"])
        if target.exists():
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{body['destination_path']} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        return _Answer.json({})

    def _dbfs_read(self, record: Recorded, raw: bytes) -> _Answer:
        path = self._required(record.query, "path")
        try:
            offset = int(record.query.get("offset") or 0)
            length = int(record.query.get("length") or DBFS_READ_DEFAULT)
        except ValueError:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "offset and length must be integers") from None
        if offset < 0 or length < 0:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "offset and length must not be negative")
        if length > DBFS_MAX_BLOCK:
            raise ApiError(400, "MAX_READ_SIZE_EXCEEDED", "Cannot read more than 1 MB at once")
        local = self.dbfs_path(path)
        if local.is_dir():
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path {_dbfs_norm(path)} is a directory")
        try:
            with open(local, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:
            raise self._dbfs_missing(path) from None
        return _Answer.json({"bytes_read": len(data), "data": base64.b64encode(data).decode()})

    def _dbfs_get_status(self, record: Recorded, raw: bytes) -> _Answer:
        path = self._required(record.query, "path")
        local = self.dbfs_path(path)
        if not local.exists():
            raise self._dbfs_missing(path)
        return _Answer.json(self._dbfs_info(path, local))

    def _dbfs_list(self, record: Recorded, raw: bytes) -> _Answer:
        path = self._required(record.query, "path")
        local = self.dbfs_path(path)
        if not local.exists():
            raise self._dbfs_missing(path)
        if local.is_file():
            return _Answer.json({"files": [self._dbfs_info(path, local)]})
        base = _dbfs_norm(path).rstrip("/")
        files = [self._dbfs_info(f"{base}/{child.name}", child) for child in sorted(local.iterdir())]
        return _Answer.json({"files": files} if files else {})

    # -- Files API ---------------------------------------------------------------------------------------------
    def _file_headers(self, local: Path) -> dict[str, str]:
        stat = local.stat()
        return {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(stat.st_size),
            "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
        }

    def _existing_file(self, path: str) -> tuple[str, Path]:
        norm, local = self._volume_path(path, is_file=True)
        if not local.is_file():
            raise ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {norm}")
        return norm, local

    def _files_upload(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        norm, local = self._volume_path(path, is_file=True)
        overwrite = record.query.get("overwrite", "true").lower() != "false"
        if local.is_dir():
            raise ApiError(409, "ALREADY_EXISTS", f"A directory exists at {norm}")
        if local.exists() and not overwrite:
            raise ApiError(409, "ALREADY_EXISTS", f"The file being created already exists: {norm}")
        for parent in local.parents:
            if parent.is_file():
                raise ApiError(409, "ALREADY_EXISTS", f"A file exists at a parent of {norm}")
            if parent == self.root:
                break
        local.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(local, raw)
        return _Answer(204, b"", {})

    def _files_download(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        _, local = self._existing_file(path)
        data = local.read_bytes()
        headers = self._file_headers(local)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", record.headers.get("range", "") or "")
        if match and (match.group(1) or match.group(2)):
            start, end = match.groups()
            first = int(start) if start else max(0, len(data) - int(end))
            last = min(int(end), len(data) - 1) if start and end else len(data) - 1
            if first >= len(data):
                raise ApiError(416, "INVALID_PARAMETER_VALUE", "Requested range not satisfiable")
            headers.update(
                {"Content-Range": f"bytes {first}-{last}/{len(data)}", "Content-Length": str(last - first + 1)}
            )
            return _Answer(206, data[first : last + 1], headers)
        return _Answer(200, data, headers)

    def _files_metadata(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        _, local = self._existing_file(path)
        return _Answer(200, b"", self._file_headers(local))

    def _files_delete(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        _, local = self._existing_file(path)
        local.unlink()
        return _Answer(204, b"", {})

    def _dir_create(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        norm, local = self._volume_path(path, is_file=False)
        for parent in [local, *local.parents]:
            if parent.is_file():
                raise ApiError(409, "ALREADY_EXISTS", f"A file exists at {norm} or one of its parents")
            if parent == self.root:
                break
        local.mkdir(parents=True, exist_ok=True)
        return _Answer(204, b"", {})

    def _existing_dir(self, path: str) -> tuple[str, Path]:
        norm, local = self._volume_path(path, is_file=False)
        if not local.is_dir():
            raise ApiError(404, "NOT_FOUND", f"The directory being accessed is not found: {norm}")
        return norm, local

    def _dir_list(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        norm, local = self._existing_dir(path)
        entries = []
        for child in sorted(local.iterdir()):
            if child.is_dir():
                entries.append({"path": f"{norm}/{child.name}/", "is_directory": True, "name": child.name})
            else:
                stat = child.stat()
                entries.append(
                    {
                        "path": f"{norm}/{child.name}",
                        "is_directory": False,
                        "file_size": stat.st_size,
                        "last_modified": int(stat.st_mtime * 1000),
                        "name": child.name,
                    }
                )
        try:
            start = int(record.query.get("page_token") or 0)
            size = min(int(record.query.get("page_size") or 1000), 1000)
        except ValueError:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Invalid page_token or page_size") from None
        page = entries[start : start + max(size, 1)]
        answer: dict[str, Any] = {"contents": page} if page else {}
        if start + len(page) < len(entries):
            answer["next_page_token"] = str(start + len(page))
        return _Answer.json(answer)

    def _dir_metadata(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        self._existing_dir(path)
        return _Answer(200, b"", {})

    def _dir_delete(self, record: Recorded, raw: bytes, path: str) -> _Answer:
        norm, local = self._existing_dir(path)
        if any(local.iterdir()):
            raise ApiError(409, "DIRECTORY_NOT_EMPTY", f"The directory is not empty: {norm}")
        local.rmdir()
        return _Answer(204, b"", {})

    # -- Jobs --------------------------------------------------------------------------------------------------
    def _runs_submit(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        tasks = body.get("tasks")
        if not tasks or not isinstance(tasks, list):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "A run must have at least one task in `tasks`")
        keys = [task.get("task_key") for task in tasks]
        if not all(keys) or len(set(keys)) != len(keys):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Every task needs a unique task_key")
        token = body.get("idempotency_token")
        with self._lock:
            if token and token in self._idempotency:
                return _Answer.json({"run_id": self._idempotency[token]})
            run_id = self._new_id()
            if token:
                self._idempotency[token] = run_id
            outcome = self._outcomes.pop(0) if self._outcomes else "run"
            task_runs = []
            for index in range(len(tasks)):
                task_run_id = self._new_id()
                self._task_runs[task_run_id] = (run_id, index)
                task_runs.append(
                    {
                        "run_id": task_run_id,
                        "state": _state("PENDING"),
                        "start_time": _now_ms(),
                        "end_time": 0,
                        "exit_code": None,
                    }
                )
            self.runs[run_id] = {
                "tasks": tasks,
                "state": _state("PENDING"),
                "log": self.root / "runs" / f"{run_id}.log",
                "outcome": outcome,
                "submit": body,
                "task_runs": task_runs,
                "start_time": _now_ms(),
                "end_time": 0,
                "cancelled": False,
            }
            self._procs[run_id] = [None] * len(tasks)
            self._cancel[run_id] = threading.Event()
            thread = threading.Thread(target=self._drive, args=(run_id,), name=f"fake-run-{run_id}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return _Answer.json({"run_id": run_id})

    def _set_state(
        self,
        run_id: int,
        life_cycle: str,
        result: str | None = None,
        message: str = "",
        task_results: list[tuple[str | None, str]] | None = None,
    ) -> None:
        with self._lock:
            run = self.runs[run_id]
            if run["state"]["life_cycle_state"] in TERMINAL:
                return  # a terminal state is final (a cancel and a scripted ending may race)
            run["state"] = _state(life_cycle, result, message)
            terminal = life_cycle in TERMINAL
            if terminal:
                run["end_time"] = _now_ms()
            for index, task_run in enumerate(run["task_runs"]):
                if task_run["state"]["life_cycle_state"] in TERMINAL:
                    continue
                task_result, task_message = task_results[index] if task_results else (result, message)
                task_run["state"] = _state(life_cycle, task_result, task_message)
                if terminal:
                    task_run["end_time"] = _now_ms()

    def _drive(self, run_id: int) -> None:
        """The life of one run: PENDING, then its scripted outcome."""
        with self._lock:
            run = self.runs[run_id]
            cancel = self._cancel[run_id]
        timeout = float(run["submit"].get("timeout_seconds") or 0)
        deadline = time.monotonic() + timeout if timeout > 0 else None
        if cancel.wait(self.run_seconds_pending) or self._stopping.is_set():
            return
        outcome = run["outcome"]
        if outcome == "fail":
            self._set_state(run_id, "TERMINATED", "FAILED", "Task failed: scripted failure")
        elif outcome == "silent":
            self._set_state(run_id, "TERMINATED", "SUCCESS", "")
        elif outcome == "internal_error":
            self._set_state(
                run_id,
                "INTERNAL_ERROR",
                "FAILED",
                "Run result unavailable: run failed with error message Scripted internal error",
            )
        elif outcome == "hang":
            self._set_state(run_id, "RUNNING")
            if not cancel.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                self._time_out(run_id)
        else:
            self._execute(run_id, cancel, deadline)

    def _time_out(self, run_id: int) -> None:
        with self._lock:
            run = self.runs[run_id]
            if run["cancelled"] or run["state"]["life_cycle_state"] in TERMINAL:
                return
            run["cancelled"] = True
            procs = [p for p in self._procs[run_id] if p is not None]
        for proc in procs:
            _kill_group(proc)
        self._set_state(run_id, "TERMINATED", "TIMEDOUT", "Run timed out")

    def _execute(self, run_id: int, cancel: threading.Event, deadline: float | None) -> None:
        run = self.runs[run_id]
        log_path: Path = run["log"]
        cwd = self.root / "runs" / str(run_id)
        cwd.mkdir(parents=True, exist_ok=True)
        commands: list[tuple[list[str], dict[str, str]] | str] = [self._command(task) for task in run["tasks"]]
        problems = [c for c in commands if isinstance(c, str)]
        if problems:
            self._set_state(run_id, "TERMINATED", "FAILED", "; ".join(problems))
            return
        with self._lock:
            if run["cancelled"]:
                return
            for index, (argv, env) in enumerate(commands):
                with open(log_path, "ab") as log:
                    self._procs[run_id][index] = subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
            self._set_state(run_id, "RUNNING")
            procs = list(self._procs[run_id])
        codes = []
        for proc in procs:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._time_out(run_id)
                    return
                try:
                    codes.append(proc.wait(timeout=0.2 if remaining is None else min(0.2, remaining)))
                    break
                except subprocess.TimeoutExpired:
                    if cancel.is_set():
                        return
        with self._lock:
            if run["cancelled"]:
                return
            for task_run, code in zip(run["task_runs"], codes, strict=True):
                task_run["exit_code"] = code
        tail = _tail(log_path)
        results = [
            (
                ("SUCCESS", "")
                if code == 0
                else (
                    "FAILED",
                    f"Task {task['task_key']} failed: the Python process exited with code {code}. "
                    f"Last lines of the log:\n{tail}",
                )
            )
            for task, code in zip(run["tasks"], codes, strict=True)
        ]
        failed = [message for result, message in results if result != "SUCCESS"]
        self._set_state(
            run_id,
            "TERMINATED",
            "FAILED" if failed else "SUCCESS",
            failed[0]
            if len(failed) == 1
            else (f"{len(failed)}/{len(results)} tasks failed. " + "\n".join(failed) if failed else ""),
            task_results=results,
        )

    def _command(self, task: dict) -> tuple[list[str], dict[str, str]] | str:
        python_task = task.get("spark_python_task")
        if not python_task:
            kinds = sorted(k for k in task if k.endswith("_task"))
            return f"Task {task['task_key']}: the fake workspace only runs spark_python_task (got {kinds})"
        python_file = python_task.get("python_file") or ""
        if python_file.startswith("dbfs:"):
            local = self.dbfs_path(python_file)
        elif python_file.startswith("/"):
            local = self.workspace_path(python_file)
        else:
            return f"Task {task['task_key']}: python_file {python_file!r} must be a dbfs:/ or absolute path"
        if not local.is_file():
            return f"Task {task['task_key']}: python_file {python_file} does not exist"
        env = dict(os.environ)
        env.update({k: str(v) for k, v in ((task.get("new_cluster") or {}).get("spark_env_vars") or {}).items()})
        env.update(self.cluster_env)
        env["ONTOS_FUSE_ROOT"] = str(self.root)
        return [sys.executable, str(local), *[str(p) for p in python_task.get("parameters") or []]], env

    def _run_or_task(self, run_id: Any) -> tuple[int, int | None]:
        """(run id, task index or None) for a run id or a task run id; the SDK's not-found shape otherwise."""
        try:
            run_id = int(run_id)
        except (TypeError, ValueError):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid run_id {run_id!r}") from None
        with self._lock:
            if run_id in self.runs:
                return run_id, None
            if run_id in self._task_runs:
                return self._task_runs[run_id]
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")

    def _run_json(self, run_id: int, task_index: int | None = None) -> dict:
        with self._lock:
            run = self.runs[run_id]
            tasks = []
            for index, (task, task_run) in enumerate(zip(run["tasks"], run["task_runs"], strict=True)):
                if task_index is not None and index != task_index:
                    continue
                tasks.append(
                    {
                        **json.loads(json.dumps(task)),
                        "run_id": task_run["run_id"],
                        "state": dict(task_run["state"]),
                        "status": _status(task_run["state"]),
                        "start_time": task_run["start_time"],
                        "end_time": task_run["end_time"],
                        "attempt_number": 0,
                        "run_page_url": f"{self.url}/#job/1/run/{task_run['run_id']}",
                    }
                )
            shown_id = run_id if task_index is None else run["task_runs"][task_index]["run_id"]
            state = dict(run["state"] if task_index is None else run["task_runs"][task_index]["state"])
            return {
                "run_id": shown_id,
                "job_id": 1,
                "number_in_job": shown_id,
                "original_attempt_run_id": shown_id,
                "creator_user_name": "fake-user@example.com",
                "run_name": run["submit"].get("run_name", "Untitled"),
                "run_type": "SUBMIT_RUN",
                "attempt_number": 0,
                "format": "MULTI_TASK",
                "state": state,
                "status": _status(state),
                "start_time": run["start_time"],
                "end_time": run["end_time"],
                "setup_duration": 0,
                "execution_duration": 0,
                "cleanup_duration": 0,
                "run_page_url": f"{self.url}/#job/1/run/{shown_id}",
                "tasks": tasks,
            }

    def _runs_get(self, record: Recorded, raw: bytes) -> _Answer:
        run_id, task_index = self._run_or_task(record.query.get("run_id"))
        return _Answer.json(self._run_json(run_id, task_index))

    def _runs_cancel(self, record: Recorded, raw: bytes) -> _Answer:
        run_id, _ = self._run_or_task(self._json(raw).get("run_id"))
        with self._lock:
            run = self.runs[run_id]
            if run["state"]["life_cycle_state"] in TERMINAL or run["cancelled"]:
                return _Answer.json({})
            run["cancelled"] = True
            procs = [p for p in self._procs[run_id] if p is not None]
            if procs:
                self._set_state(run_id, "TERMINATING", None, "Run cancellation requested")
        self._cancel[run_id].set()
        for proc in procs:
            _kill_group(proc)
        self._set_state(run_id, "TERMINATED", "CANCELED", "Run cancelled")
        return _Answer.json({})

    def _runs_get_output(self, record: Recorded, raw: bytes) -> _Answer:
        run_id, task_index = self._run_or_task(record.query.get("run_id"))
        if task_index is None:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Retrieving the output of runs with multiple tasks is not supported. Please retrieve the "
                "output of each individual task run instead.",
            )
        metadata = self._run_json(run_id, task_index)
        log_path = self.runs[run_id]["log"]
        logs = log_path.read_bytes() if log_path.exists() else b""
        limit = 5 * 1024 * 1024
        answer: dict[str, Any] = {
            "metadata": metadata,
            "logs": logs[-limit:].decode("utf-8", "replace"),
            "logs_truncated": len(logs) > limit,
        }
        if metadata["state"].get("result_state") not in (None, "SUCCESS"):
            answer["error"] = metadata["state"].get("state_message", "")
            answer["error_trace"] = _tail(log_path)
        return _Answer.json(answer)

    def _clusters_get(self, record: Recorded, raw: bytes) -> _Answer:
        cluster_id = self._required(record.query, "cluster_id")
        with self._lock:
            cluster = self.clusters.get(cluster_id)
        return _Answer.json(
            cluster
            if cluster is not None
            else {
                "cluster_id": cluster_id,
                "cluster_name": f"fake-{cluster_id}",
                "state": "RUNNING",
                "spark_version": "15.4.x-scala2.12",
                "node_type_id": "fake-node",
                "num_workers": 0,
            }
        )

    # -- Serving endpoints -------------------------------------------------------------------------------------
    def _check_gateway(self, gateway: dict) -> None:
        for side in ("input", "output"):
            behavior = (((gateway.get("guardrails") or {}).get(side) or {}).get("pii") or {}).get("behavior", "NONE")
            if behavior not in ("NONE", "BLOCK", "MASK"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid PII behavior {behavior!r} for {side}")
        for limit in gateway.get("rate_limits") or []:
            calls = limit.get("calls")
            if not isinstance(calls, int) or isinstance(calls, bool) or calls < 0:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "A rate limit needs an integer number of calls")
            if limit.get("renewal_period") != "minute":
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "A rate limit's renewal_period must be minute")
            if limit.get("key", "user") not in ("user", "endpoint", "user_group", "service_principal"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Unknown rate limit key {limit.get('key')!r}")

    def _check_config(self, config: dict) -> None:
        entities = config.get("served_entities") or config.get("served_models") or []
        names = []
        for entity in entities:
            if not (entity.get("entity_name") or entity.get("model_name") or entity.get("external_model")):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Every served entity needs an entity_name")
            name = _entity_name(entity)
            if not _ENDPOINT_NAME.fullmatch(name):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid served entity name {name!r}")
            names.append(name)
            model = self.models.get(entity.get("entity_name") or "")
            if (
                model is not None
                and "versions" in model
                and str(entity.get("entity_version")) not in {str(v) for v in model["versions"]}
            ):
                raise ApiError(
                    404,
                    "RESOURCE_DOES_NOT_EXIST",
                    f"Model version {entity.get('entity_name')}/{entity.get('entity_version')} does not exist",
                )
        if len(set(names)) != len(names):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Served entity names must be unique: {names}")
        routes = (config.get("traffic_config") or {}).get("routes")
        if routes:
            for route in routes:
                target = route.get("served_entity_name") or route.get("served_model_name")
                if target not in names:
                    raise ApiError(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        f"Traffic route to {target!r}, which is not a served entity ({names})",
                    )
            if sum(int(r.get("traffic_percentage") or 0) for r in routes) != 100:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Traffic percentages must add up to 100")

    def _endpoint_json(self, name: str) -> dict:
        with self._lock:
            stored = json.loads(json.dumps(self.endpoints[name]))
            meta = dict(self._endpoint_meta[name])
        config = stored.get("config") or {}
        entities = [
            {
                **e,
                "name": _entity_name(e),
                "creator": "fake-user@example.com",
                "creation_timestamp": meta["created"],
                "state": {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""},
            }
            for e in config.get("served_entities") or []
        ]
        traffic = config.get("traffic_config") or _default_traffic([e["name"] for e in entities])
        answer = {
            **stored,
            "id": meta["id"],
            "creator": "fake-user@example.com",
            "creation_timestamp": meta["created"],
            "last_updated_timestamp": meta["updated"],
            "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
            "permission_level": "CAN_MANAGE",
            "config": {
                **{k: v for k, v in config.items() if k != "name"},
                "served_entities": entities,
                "traffic_config": traffic,
                "config_version": meta["version"],
            },
        }
        answer.pop("rate_limits", None)
        return answer

    def _endpoint(self, name: str) -> dict:
        with self._lock:
            if name not in self.endpoints:
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Endpoint with name '{name}' does not exist.")
            return self.endpoints[name]

    def _endpoint_create(self, record: Recorded, raw: bytes) -> _Answer:
        body = self._json(raw)
        name = self._required(body, "name")
        if not _ENDPOINT_NAME.fullmatch(name):
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid endpoint name {name!r}: letters, digits, '-' and '_', at most 63 characters",
            )
        self._check_config(body.get("config") or {})
        self._check_gateway(body.get("ai_gateway") or {})
        with self._lock:
            if name in self.endpoints:
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists.")
            now = _now_ms()
            self.endpoints[name] = body
            self._endpoint_meta[name] = {"id": uuid.uuid4().hex, "created": now, "updated": now, "version": 1}
        return _Answer.json(self._endpoint_json(name))

    def _endpoint_list(self, record: Recorded, raw: bytes) -> _Answer:
        with self._lock:
            names = sorted(self.endpoints)
        return _Answer.json({"endpoints": [self._endpoint_json(n) for n in names]})

    def _endpoint_get(self, record: Recorded, raw: bytes, name: str) -> _Answer:
        self._endpoint(name)
        return _Answer.json(self._endpoint_json(name))

    def _endpoint_delete(self, record: Recorded, raw: bytes, name: str) -> _Answer:
        self._endpoint(name)
        with self._lock:
            self.endpoints.pop(name, None)
            self._endpoint_meta.pop(name, None)
        return _Answer.json({})

    def _endpoint_update_config(self, record: Recorded, raw: bytes, name: str) -> _Answer:
        stored = self._endpoint(name)
        body = self._json(raw)
        if not body.get("served_entities") and not body.get("served_models"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "served_entities must not be empty")
        config = {
            k: v
            for k, v in (stored.get("config") or {}).items()
            if k not in ("served_entities", "served_models", "traffic_config")
        }
        config.update(body)
        self._check_config(config)
        with self._lock:
            stored["config"] = config
            meta = self._endpoint_meta[name]
            meta["version"] += 1
            meta["updated"] = _now_ms()
        return _Answer.json(self._endpoint_json(name))

    def _endpoint_put_ai_gateway(self, record: Recorded, raw: bytes, name: str) -> _Answer:
        stored = self._endpoint(name)
        body = self._json(raw)
        self._check_gateway(body)
        with self._lock:
            stored["ai_gateway"] = body
            self._endpoint_meta[name]["updated"] = _now_ms()
        return _Answer.json(body)

    # -- Unity Catalog registered models ----------------------------------------------------------------------
    def _model(self, full_name: str) -> dict:
        with self._lock:
            model = self.models.get(full_name)
        if model is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Registered model '{full_name}' does not exist.")
        return model

    def _aliases(self, model: dict) -> list[dict]:
        return [
            {"alias_name": alias, "version_num": int(version)}
            for alias, version in sorted((model.get("aliases") or {}).items())
        ]

    def _model_get(self, record: Recorded, raw: bytes, full_name: str) -> _Answer:
        model = self._model(full_name)
        catalog, schema, name = _three_parts(full_name)
        answer = {
            "full_name": full_name,
            "name": name,
            "catalog_name": catalog,
            "schema_name": schema,
            "owner": "fake-user@example.com",
            "created_by": "fake-user@example.com",
        }
        if record.query.get("include_aliases") == "true":
            answer["aliases"] = self._aliases(model)
        return _Answer.json(answer)

    def _model_delete(self, record: Recorded, raw: bytes, full_name: str) -> _Answer:
        self._model(full_name)
        with self._lock:
            self.models.pop(full_name, None)
        return _Answer.json({})

    def _alias_get(self, record: Recorded, raw: bytes, full_name: str, alias: str) -> _Answer:
        model = self._model(full_name)
        aliases = model.get("aliases") or {}
        if alias not in aliases:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Alias '{alias}' does not exist on model '{full_name}'.")
        catalog, schema, _ = _three_parts(full_name)
        version = int(aliases[alias])
        answer = {
            "model_name": full_name,
            "catalog_name": catalog,
            "schema_name": schema,
            "version": version,
            "status": "READY",
            "source": f"models:/{full_name}/{version}",
        }
        if record.query.get("include_aliases") == "true":
            answer["aliases"] = [a for a in self._aliases(model) if a["version_num"] == version]
        return _Answer.json(answer)

    def _alias_set(self, record: Recorded, raw: bytes, full_name: str, alias: str) -> _Answer:
        model = self._model(full_name)
        version = self._required(self._json(raw), "version_num")
        if "versions" in model and str(version) not in {str(v) for v in model["versions"]}:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Model version {full_name}/{version} does not exist.")
        with self._lock:
            model.setdefault("aliases", {})[alias] = int(version)
        return _Answer.json({"alias_name": alias, "version_num": int(version)})

    def _alias_delete(self, record: Recorded, raw: bytes, full_name: str, alias: str) -> _Answer:
        model = self._model(full_name)
        with self._lock:
            (model.get("aliases") or {}).pop(alias, None)
        return _Answer.json({})


# -- helpers -------------------------------------------------------------------------------------------------------
def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _parse_body(raw: bytes, content_type: str) -> object:
    if not raw:
        return None
    if "json" in content_type or not content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "Data is not valid base64") from None


def _dbfs_norm(path: str) -> str:
    text = str(path)
    if text.startswith("dbfs:"):
        text = text[len("dbfs:") :]
    if not text.startswith("/"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path must be absolute: {path}")
    norm = posixpath.normpath(text)
    return "/" + norm.lstrip("/")


def _write_atomic(local: Path, data: bytes) -> None:
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, local)


def _state(life_cycle: str, result: str | None = None, message: str = "") -> dict:
    state: dict[str, Any] = {
        "life_cycle_state": life_cycle,
        "state_message": message,
        "user_cancelled_or_timedout": result in ("CANCELED", "TIMEDOUT"),
    }
    if result is not None:
        state["result_state"] = result
    return state


def _status(state: dict) -> dict:
    life_cycle = state["life_cycle_state"]
    status: dict[str, Any] = {"state": "TERMINATED" if life_cycle in TERMINAL else life_cycle}
    if life_cycle in TERMINAL:
        result = state.get("result_state")
        code, kind = {
            "SUCCESS": ("SUCCESS", "SUCCESS"),
            "CANCELED": ("USER_CANCELED", "SUCCESS"),
            "TIMEDOUT": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"),
        }.get(result or "", ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"))
        if life_cycle == "INTERNAL_ERROR":
            code, kind = "INTERNAL_ERROR", "INTERNAL_ERROR"
        status["termination_details"] = {"code": code, "type": kind, "message": state.get("state_message", "")}
    return status


def _tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _three_parts(full_name: str) -> tuple[str, str, str]:
    catalog, schema, name = [*full_name.split(".", 2), "", ""][:3]
    return catalog, schema, name


def _entity_name(entity: dict) -> str:
    if entity.get("name"):
        return str(entity["name"])
    base = str(entity.get("entity_name") or entity.get("model_name") or "external").replace(".", "-")
    version = entity.get("entity_version") or entity.get("model_version")
    return f"{base}-{version}" if version else base


def _default_traffic(names: list[str]) -> dict | None:
    if not names:
        return None
    share, rest = divmod(100, len(names))
    return {
        "routes": [
            {"served_entity_name": n, "traffic_percentage": share + (rest if i == 0 else 0)}
            for i, n in enumerate(names)
        ]
    }


def _kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Stop a run's process and its children (it runs in its own session): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a finished process
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
