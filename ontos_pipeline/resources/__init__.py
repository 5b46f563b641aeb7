"""Dagster resources: one per external system (Spark, the lakehouse, MLflow, serving, Databricks)."""
