"""Spark resource: a local `local[*]` session shared by the steps of a run."""

from __future__ import annotations

from dagster import ConfigurableResource
from pyspark.sql import SparkSession

from ontos_pipeline.spark_session import get_spark


class SparkResource(ConfigurableResource):
    """Local Spark. The session lives for the process, so the in-process executor shares it across steps."""

    master: str = "local[*]"
    shuffle_partitions: int = 4
    driver_memory: str = "4g"

    def session(self) -> SparkSession:
        return get_spark(self.master, self.shuffle_partitions, self.driver_memory)
