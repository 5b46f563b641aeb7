"""Spark resource: the process's session on the warm local engine, shared by the steps of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import ConfigurableResource

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkResource(ConfigurableResource):
    """Local Spark through the shared engine (`ontos engine status`); connecting takes milliseconds."""

    def session(self) -> SparkSession:
        from ontos_pipeline.spark_session import get_spark

        return get_spark()
