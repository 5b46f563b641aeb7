"""MONITOR: monitoring reports over the inference log, drift and alerts."""
