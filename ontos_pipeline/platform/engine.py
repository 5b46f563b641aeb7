"""The local Spark engine: one warm Spark Connect server that every local process shares.

Starting a JVM costs seconds on every process that needs Spark (a CLI command, each Dagster run, each run the
sensor launches, each test process). Instead the first process that asks for Spark starts one Spark Connect server
(the `spark-connect` jar shipped in the pyspark wheel) and every later one connects to it over gRPC on 127.0.0.1.
Its state lives in the engine folder (`ONTOS_ENGINE_HOME`, default `ONTOS_HOME/engine`):

- `engine.json`: pid, port, the bearer token clients authenticate with (mode 0600), the Python its workers use,
  the Spark version, cores and memory;
- `engine.log`: the server's output; `engine.lock`: serializes starting and stopping.

A server that died (or one started for another Python or Spark version) is replaced by the next process that needs
Spark. Clients of one code version share one server-side session, so the Python workers that run our UDFs stay warm
across processes; a code change gives a new session and with it fresh workers. `ontos engine stop` stops it.

Only the standard library is imported here: the CLI asks for the engine's state without loading pyspark.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
STATE, LOG, LOCK = "engine.json", "engine.log", "engine.lock"
READY_TIMEOUT = 180.0  # seconds a start may take on a busy machine
LOG4J = Path(__file__).resolve().parent / "log4j2.properties"

# Server settings for local work on small data (session settings cannot change them).
SERVER_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # Delta readers expect micros, not INT96
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.sources.commitProtocolClass": (
        "org.apache.spark.sql.execution.datasources.SQLHadoopMapReduceCommitProtocol"
    ),
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.adaptive.enabled": "true",
    "spark.connect.grpc.binding.address": "127.0.0.1",
    "spark.connect.grpc.maxInboundMessageSize": str(256 * 1024 * 1024),
    # our sessions never time out while the engine is up (a timed-out session id cannot be reused)
    "spark.connect.session.manager.defaultSessionTimeout": "3650d",
    "spark.python.worker.reuse": "true",
}


class EngineError(RuntimeError):
    """The local engine cannot be started or reached; the message says what to look at."""


@dataclass(frozen=True)
class Engine:
    """A running engine, as recorded in `engine.json`."""

    pid: int
    port: int
    token: str
    python: str
    spark_version: str
    cores: int
    memory: str
    started_at: str
    directory: str

    def url(self, session_id: str | None = None) -> str:
        """The Spark Connect address ("localhost" makes the client use local channel credentials + the token)."""
        tail = f";session_id={session_id}" if session_id else ""
        return f"sc://localhost:{self.port}/;token={self.token}{tail}"

    def alive(self) -> bool:
        return _is_server(self.pid) and _listening(self.port)

    def describe(self) -> str:
        return (
            f"Spark {self.spark_version} engine pid {self.pid} on 127.0.0.1:{self.port} ({self.cores} cores, "
            f"{self.memory} memory, workers on {self.python}), started {self.started_at}, state in "
            f"{self.directory}"
        )


def engine_home(env: dict[str, str] | None = None) -> Path:
    """`ONTOS_ENGINE_HOME`, else `ONTOS_HOME/engine` (as `settings.load_settings` resolves it)."""
    env = os.environ if env is None else env
    explicit = env.get("ONTOS_ENGINE_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return Path(env.get("ONTOS_HOME") or ".ontos").expanduser().resolve() / "engine"


def cores(env: dict[str, str] | None = None) -> int:
    """Spark's local cores: `ONTOS_ENGINE_CORES`, else every core of the machine."""
    env = os.environ if env is None else env
    text = env.get("ONTOS_ENGINE_CORES") or str(os.cpu_count() or 1)
    if not text.isdigit() or int(text) < 1:
        raise EngineError(f"ONTOS_ENGINE_CORES={text!r} is not a number of cores; use an integer >= 1")
    return int(text)


def memory(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    text = env.get("ONTOS_ENGINE_MEMORY") or "4g"
    if not text[:-1].isdigit() or text[-1].lower() not in "mg":
        raise EngineError(f"ONTOS_ENGINE_MEMORY={text!r} is not a JVM memory size; use e.g. 2g or 4096m")
    return text


def extra_conf(env: dict[str, str] | None = None) -> dict[str, str]:
    """`ONTOS_ENGINE_CONF`: more Spark settings for the engine, `key=value` pairs separated by spaces or commas
    (e.g. `spark.eventLog.enabled=true spark.eventLog.dir=/tmp/events`); they apply when the engine starts."""
    env = os.environ if env is None else env
    out = {}
    for pair in env.get("ONTOS_ENGINE_CONF", "").replace(",", " ").split():
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("spark."):
            raise EngineError(f"ONTOS_ENGINE_CONF: {pair!r} is not a spark.<setting>=<value> pair")
        out[key] = value
    return out


def spark_version() -> str:
    """The installed pyspark's version, read from its metadata (importing pyspark costs a second)."""
    from importlib.metadata import version

    return version("pyspark")


def running(directory: Path | None = None) -> Engine | None:
    """The engine recorded in `directory` if it is alive and usable by this Python, else None."""
    engine = _read(directory or engine_home())
    if engine is None or not engine.alive():
        return None
    if engine.python != sys.executable or engine.spark_version != spark_version():
        return None
    return engine


def ensure(directory: Path | None = None) -> Engine:
    """The running engine, started (or restarted) first when there is none usable by this process."""
    directory = directory or engine_home()
    found = running(directory)
    if found is not None:
        return found
    with _locked(directory):
        found = running(directory)  # another process may have started it while we waited
        if found is not None:
            return found
        stale = _read(directory)
        if stale is not None and _is_server(stale.pid):  # alive but for another Python/Spark, or not answering
            _terminate(stale.pid)
        return _start(directory)


def stop(directory: Path | None = None, timeout: float = 30.0) -> Engine | None:
    """Stop the engine recorded in `directory`; returns what was stopped (None when none was running)."""
    directory = directory or engine_home()
    with _locked(directory):
        engine = _read(directory)
        (directory / STATE).unlink(missing_ok=True)
        if engine is None or not _is_server(engine.pid):
            return None
        _terminate(engine.pid, timeout)
        return engine


def session_id(engine: Engine) -> str:
    """The server-side session shared by every client of this engine that runs the same code.

    One session means one set of warm Python workers for UDFs; the code fingerprint in the id gives changed code a
    new session, so workers never run stale modules."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ontos-engine/{engine.pid}/{engine.started_at}/{code_fingerprint()}"))


def code_fingerprint() -> str:
    """Paths, sizes and modification times of our Python sources (stat only, a few milliseconds)."""
    root = Path(__file__).resolve().parents[1]  # the ontos_pipeline package
    digest = hashlib.sha256()
    for folder in (root, root.parent / "synthetic_data"):
        for path in sorted(folder.rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


# -- internals ---------------------------------------------------------------------------------------------------
def _read(directory: Path) -> Engine | None:
    try:
        data = json.loads((directory / STATE).read_text(encoding="utf-8"))
        return Engine(**data)
    except (OSError, ValueError, TypeError):
        return None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_server(pid: int) -> bool:
    """Whether `pid` is alive and is a Spark Connect server (a recycled pid is not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return SERVER_CLASS.encode() in handle.read()
    except OSError:
        pass
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(["ps", "-ww", "-p", str(pid), "-o", "command="], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and SERVER_CLASS in out.stdout


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spark_home() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise EngineError("pyspark is not installed in this environment; run through `uv run`")
    return Path(spec.origin).parent


class JavaNotFoundError(RuntimeError):
    """Java 17+ is needed by PySpark 4 and was not found."""


def java_major_version() -> int:
    """Major version of the `java` PySpark will use (JAVA_HOME first, then PATH)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    hint = (
        "PySpark needs Java 17 or newer: install it (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`, "
        "macOS: `brew install openjdk@17`) and put `java` on PATH or set JAVA_HOME"
    )
    if not java or not os.path.exists(java):
        raise JavaNotFoundError(
            f"no Java runtime found ({'JAVA_HOME=' + home if home else 'java not on PATH'}). " + hint
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise JavaNotFoundError(f"could not read the version of {java}. {hint}")
    major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
    if major < 17:
        raise JavaNotFoundError(f"{java} is Java {major}. {hint}")
    return major


def _start(directory: Path) -> Engine:
    java_major_version()  # a clear error when Java is missing or too old
    spark_home = _spark_home()
    port, token = _free_port(), secrets.token_hex(24)
    n_cores, mem = cores(), memory()
    conf = {
        **SERVER_CONF,
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.warehouse.dir": str(directory / "warehouse"),
        "spark.local.dir": str(directory / "tmp"),
        "spark.driver.extraJavaOptions": f"-Dlog4j.configurationFile={LOG4J} -Dderby.system.home={directory}",
        "spark.sql.shuffle.partitions": str(max(2, 2 * n_cores)),
        **extra_conf(),
    }
    command = [
        str(spark_home / "bin" / "spark-submit"),
        "--class",
        SERVER_CLASS,
        "--name",
        "ontos-engine",
        "--master",
        f"local[{n_cores}]",
        "--driver-memory",
        mem,
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command.append("spark-internal")
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONNECT_AUTHENTICATE_TOKEN": token,  # in the environment, not on the command line (ps shows it)
        # UDF workers: one thread each (Spark runs one worker per core)
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_SUBMIT_ARGS"):
        env.pop(name, None)
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    log_path = directory / LOG
    with open(log_path, "ab") as log:
        log.write(f"\n--- starting the engine at {datetime.now(UTC).isoformat()} on port {port}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # outlives this process
    deadline = time.monotonic() + READY_TIMEOUT
    while not _listening(port):
        if process.poll() is not None:
            raise EngineError(f"the local Spark engine exited with {process.returncode} while starting; see {log_path}")
        if time.monotonic() > deadline:
            _terminate(process.pid)
            raise EngineError(
                f"the local Spark engine did not answer on port {port} within {READY_TIMEOUT:.0f} s; see {log_path}"
            )
        time.sleep(0.2)
    engine = Engine(
        pid=process.pid,
        port=port,
        token=token,
        python=sys.executable,
        spark_version=spark_version(),
        cores=n_cores,
        memory=mem,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        directory=str(directory),
    )
    tmp = directory / f".{STATE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token: readable by its owner only
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(engine), handle, indent=2)
    os.replace(tmp, directory / STATE)
    return engine


def _terminate(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the engine's process group (JVM and Python workers), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _is_server(pid):
                return
            time.sleep(0.1)
