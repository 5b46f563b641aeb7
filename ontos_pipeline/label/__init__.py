"""LABEL: canonical labels (imports, reviews, feedback) with usage governance, and label review."""
