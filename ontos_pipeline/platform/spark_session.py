"""The process's Spark session: a Spark Connect client of the warm local engine (`ontos_pipeline.platform.engine`).

The session is created once per process and shared by every step of a run. Connecting costs milliseconds; the JVM
is started at most once while the machine is up, by whichever process first needs it.
"""

from __future__ import annotations

import contextlib
import os
import threading

from ontos_pipeline.platform import engine as local_engine

_LOCK = threading.Lock()
_CURRENT: dict[str, object] = {}  # "session" -> SparkSession, "engine" -> Engine it talks to


class EngineLostError(RuntimeError):
    """The local engine stopped while this process was using it."""


def get_spark():
    """The process's session on the local engine, (re)connecting when there is none or its engine has gone.

    In a Databricks step (the runtime sets DATABRICKS_RUNTIME_VERSION) it is the runtime's own session."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        from pyspark.sql import SparkSession

        return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    with _LOCK:
        session, engine = _CURRENT.get("session"), _CURRENT.get("engine")
        if session is not None and engine is not None and engine.alive():
            return session
        if session is not None:  # its engine is gone: forget it (pyspark keeps the first session as default)
            _forget(session)
        engine = local_engine.ensure()
        session = _connect(engine)
        _CURRENT.update(session=session, engine=engine)
        return session


def current_engine() -> local_engine.Engine | None:
    """The engine this process's session talks to (None before the first `get_spark`)."""
    return _CURRENT.get("engine")  # type: ignore[return-value]


def disconnect() -> None:
    """Close this process's connection (the shared server-side session stays for other processes)."""
    with _LOCK:
        session = _CURRENT.pop("session", None)
        _CURRENT.pop("engine", None)
        if session is not None:
            _forget(session)


def _forget(session) -> None:
    """Close the connection and drop the session as pyspark's default and active one; the server-side session
    stays (`release_session_on_close` is off), other processes keep using it."""
    with contextlib.suppress(Exception):  # a channel to a stopped engine: nothing left to close
        session.stop()


def _connect(engine: local_engine.Engine):
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", engine.python)
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"  # pyspark.sql.functions build Spark Connect columns from now on
    session = SparkSession.builder.remote(engine.url(local_engine.session_id(engine))).create()
    # the session is shared with other processes: never release it on stop() or exit
    session.release_session_on_close = False
    # a local engine that does not answer is gone, not busy: fail in seconds instead of retrying for minutes
    session.client.set_retry_policies([DefaultPolicy(max_retries=4, max_backoff=2000)])
    return session


def engine_lost(exc: BaseException) -> EngineLostError | None:
    """An `EngineLostError` explaining `exc` if it came from losing the engine mid-step, else None."""
    engine = current_engine()
    if engine is None or engine.alive():
        return None
    chain, seen = exc, 0
    while chain is not None and seen < 10:
        module = type(chain).__module__
        if module.startswith(("grpc", "pyspark.errors", "pyspark.sql.connect")):
            return EngineLostError(
                f"the local Spark engine (pid {engine.pid}, port {engine.port}) stopped while this step was "
                f"running ({type(exc).__name__}); nothing of this step was committed. The next command starts a "
                f"new engine by itself; its log is {engine.directory}/{local_engine.LOG}"
            )
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    return None
