"""The local scikit-learn trainer: features, model families, extraction heads, scoring."""
