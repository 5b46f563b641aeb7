"""The local Spark session: Java is checked with a clear error, settings are the local ones."""

from __future__ import annotations

import pytest

from ontos_pipeline.platform import spark_session
from ontos_pipeline.platform.engine import JavaNotFoundError, java_major_version


def test_missing_java_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(JavaNotFoundError, match=r"no Java runtime found \(JAVA_HOME=.*no-jdk\).*openjdk-17"):
        java_major_version()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "jdk" / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(JavaNotFoundError, match=r"is Java 8\. PySpark needs Java 17 or newer"):
        java_major_version()


def test_installed_java_is_17_or_newer():
    assert java_major_version() >= 17


def test_session_is_shared_and_configured_for_local_work(spark):
    assert spark_session.get_spark() is spark
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MICROS"
    assert spark.conf.get("spark.ui.enabled") == "false"
    assert spark.conf.get("spark.master").startswith("local[")
