"""Ontos Pipeline: the fine-tuning data loop as a Dagster code location."""

from ontos_pipeline.platform.threads import configure_openmp

configure_openmp()
