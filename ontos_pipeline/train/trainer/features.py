"""Item columns -> model features: the rendered prompt (TF-IDF), numeric and categorical columns, image pixels.

`ItemFeatures` is fitted on the training rows and then turns any frame of item columns (training rows, test rows,
serving requests) into a sparse matrix (every feature, for linear models) or a dense one (numeric, one-hot, image
pixels and a low-rank projection of the text, for tree ensembles and nearest neighbours).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ontos_pipeline.specs import UseCaseSpec

PROMPT = "__prompt__"  # the rendered system + user text, added to the frame by the model
IMAGE_SIDE = 8  # images are reduced to IMAGE_SIDE x IMAGE_SIDE RGB pixels
TEXT_COMPONENTS = 32


@dataclass(frozen=True)
class FeatureColumns:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    images: tuple[str, ...]

    @classmethod
    def of(cls, spec: UseCaseSpec) -> FeatureColumns:
        numeric = tuple(
            c.name for c in spec.sheet.columns if c.category == "numeric" and c.type in ("integer", "double")
        )
        return cls(
            numeric,
            tuple(c.name for c in spec.sheet.columns_of("categorical")),
            tuple(c.name for c in spec.sheet.columns_of("image")),
        )

    @property
    def required(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical, *self.images)


def image_pixels(paths: Sequence[object]) -> np.ndarray:
    """(n, side*side*3 + 1) floats: each image's downscaled RGB pixels in [0, 1], then a "missing" flag."""
    out = np.zeros((len(paths), IMAGE_SIDE * IMAGE_SIDE * 3 + 1), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(str(path)) as img:
                pixels = img.convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BILINEAR)
            out[i, :-1] = np.asarray(pixels, dtype=np.float32).ravel() / 255.0
        except (OSError, ValueError, TypeError):  # no path, missing or unreadable file: a flagged zero image
            out[i, -1] = 1.0
    return out


class ItemFeatures:
    """Fitted feature extraction for one use case (pickles with the model)."""

    def __init__(self, columns: FeatureColumns, seed: int = 0):
        self.columns, self.seed = columns, seed
        self.text = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, max_features=20000, sublinear_tf=True, token_pattern=r"(?u)\b\w[\w.%-]*\b"
        )
        self.svd: TruncatedSVD | None = None
        self.scaler = StandardScaler() if columns.numeric else None
        self.onehot = OneHotEncoder(handle_unknown="ignore") if columns.categorical else None
        self.medians: dict[str, float] = {}

    def fit(self, frame: pd.DataFrame) -> ItemFeatures:
        text = self.text.fit_transform(frame[PROMPT].fillna(""))
        components = min(TEXT_COMPONENTS, text.shape[1] - 1, text.shape[0] - 1)
        if components >= 2:
            self.svd = TruncatedSVD(components, random_state=self.seed).fit(text)
        self.medians = {c: float(pd.to_numeric(frame[c], errors="coerce").median()) for c in self.columns.numeric}
        self.medians = {c: 0.0 if np.isnan(v) else v for c, v in self.medians.items()}
        if self.scaler is not None:
            self.scaler.fit(self._numeric(frame))
        if self.onehot is not None:
            self.onehot.fit(self._categorical(frame))
        return self

    def _numeric(self, frame: pd.DataFrame) -> np.ndarray:
        """Scaled-to-be numeric columns with median imputation, plus one missing-value flag per column."""
        if not self.columns.numeric:
            return np.zeros((len(frame), 0))
        values = np.column_stack(
            [pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in self.columns.numeric]
        )
        missing = np.isnan(values)
        filled = np.where(missing, [self.medians[c] for c in self.columns.numeric], values)
        return np.hstack([filled, missing.astype(float)])

    def _categorical(self, frame: pd.DataFrame) -> np.ndarray:
        return (
            frame[list(self.columns.categorical)]
            .astype(object)
            .where(frame[list(self.columns.categorical)].notna(), "__null__")
            .astype(str)
            .to_numpy()
        )

    def _blocks(self, frame: pd.DataFrame) -> tuple[sparse.csr_matrix, list[np.ndarray]]:
        text = self.text.transform(frame[PROMPT].fillna(""))
        dense = [self.scaler.transform(self._numeric(frame))] if self.scaler is not None else []
        if self.onehot is not None:
            dense.append(self.onehot.transform(self._categorical(frame)).toarray())
        dense += [image_pixels(frame[c].tolist()) for c in self.columns.images]
        return text, dense

    def sparse(self, frame: pd.DataFrame) -> sparse.csr_matrix:
        """Every feature: TF-IDF of the prompt next to the structured columns (for linear models)."""
        text, dense = self._blocks(frame)
        return sparse.hstack([text, *[sparse.csr_matrix(d) for d in dense]], format="csr")

    def dense(self, frame: pd.DataFrame) -> np.ndarray:
        """Structured columns, image pixels and the prompt's SVD projection (for trees and neighbours)."""
        text, dense = self._blocks(frame)
        parts = [*dense, self.svd.transform(text) if self.svd is not None else np.zeros((len(frame), 0))]
        return np.hstack(parts).astype(np.float32)
