"""Thin Dagster assets and checks, one module per stage group; the logic lives in `ontos_pipeline.stages`."""
