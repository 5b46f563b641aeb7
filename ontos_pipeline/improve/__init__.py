"""IMPROVE: gap reports, annotation tasks and the retrain sensor's logic."""
