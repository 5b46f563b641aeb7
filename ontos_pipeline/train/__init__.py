"""TRAIN: the dual-gated export, model training, evaluation and the promotion gate."""
