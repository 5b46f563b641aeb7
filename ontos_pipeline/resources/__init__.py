"""Dagster resources: one abstract contract per external system (`base`), its local implementation (`local`) and its
Databricks one (`databricks`, plus the Pipes compute in `ontos_pipeline.databricks.compute`); `targets` picks them by
ONTOS_TARGET. Step bodies annotate the abstract types and use only their contract."""
