"""The local Spark session: created once per process and shared by every step of a run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from pyspark.sql import SparkSession

_LOCK = threading.Lock()
LOG4J = Path(__file__).resolve().parent / "log4j2.properties"

LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # Delta readers expect micros, not INT96
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.sources.commitProtocolClass":
        "org.apache.spark.sql.execution.datasources.SQLHadoopMapReduceCommitProtocol",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.extraJavaOptions": f"-Dlog4j.configurationFile={LOG4J}",
}


class JavaNotFoundError(RuntimeError):
    """Java 17+ is needed by PySpark 4 and was not found."""


def java_major_version() -> int:
    """Major version of the `java` PySpark will use (JAVA_HOME first, then PATH)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    hint = ("PySpark needs Java 17 or newer: install it (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`, "
            "macOS: `brew install openjdk@17`) and put `java` on PATH or set JAVA_HOME")
    if not java or not os.path.exists(java):
        raise JavaNotFoundError(f"no Java runtime found ({'JAVA_HOME=' + home if home else 'java not on PATH'}). "
                                + hint)
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise JavaNotFoundError(f"could not read the version of {java}. {hint}")
    major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
    if major < 17:
        raise JavaNotFoundError(f"{java} is Java {major}. {hint}")
    return major


def get_spark(master: str = "local[*]", shuffle_partitions: int = 4, driver_memory: str = "4g",
              extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Return the process's Spark session, creating it on first use with sensible local settings."""
    with _LOCK:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        java_major_version()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv (pandas, pyarrow)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (SparkSession.builder.master(master).appName("ontos-pipeline")
                   .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
                   .config("spark.driver.memory", driver_memory))
        for key, value in {**LOCAL_CONF, **(extra_conf or {})}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark
