"""Item columns -> model features, chosen per sheet column category.

`ItemFeatures` is fitted on the training rows and then turns any frame of item columns (training rows, test rows,
serving requests) into feature blocks:

- numeric columns as numbers (median-imputed, standardised, one missing flag per column);
- categorical columns one-hot (a missing value is its own level, unseen levels are all zeros);
- text columns as text (TF-IDF per column);
- image columns as pixels (each cell a path or inline content, read by `platform.images.open_image`, reduced to
  `image_size` x `image_size` RGB plus a missing flag);
- the rendered prompt (system + user text) as TF-IDF; it repeats the columns the template shows (numbers become
  tokens), so the linear families decide on the validation split whether to use it (`prompt=` of `sparse`).

`sparse` joins the blocks for linear models; `dense` joins the structured blocks, the pixels and a low-rank (SVD)
projection of the prompt for tree ensembles and nearest neighbours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ontos_pipeline.platform.images import image_file_column, open_image
from ontos_pipeline.specs import UseCaseSpec

PROMPT = "__prompt__"  # the rendered system + user text, added to the frame by the model
DEFAULT_IMAGE_SIZE = 8  # pixels per side when the spec does not say (spec.training.image_size)
TEXT_COMPONENTS = 32


@dataclass(frozen=True)
class FeatureColumns:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    images: tuple[str, ...]
    text: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: UseCaseSpec) -> FeatureColumns:
        numeric = tuple(
            c.name for c in spec.sheet.columns if c.category == "numeric" and c.type in ("integer", "double")
        )
        return cls(
            numeric,
            tuple(c.name for c in spec.sheet.columns_of("categorical")),
            tuple(c.name for c in spec.sheet.columns_of("image")),
            tuple(c.name for c in spec.sheet.columns_of("text")),
        )

    @property
    def required(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical, *self.text, *self.images)


def image_pixels(cells: Sequence[object], side: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """(n, side*side*3 + 1) floats: each image's downscaled RGB pixels in [0, 1], then a "missing" flag.

    A cell is a path or inline image content (a data URL or bare base64); an empty, unreadable or non-image cell
    gives a flagged zero image."""
    out = np.zeros((len(cells), side * side * 3 + 1), dtype=np.float32)
    for i, cell in enumerate(cells):
        try:
            with open_image(cell) as img:
                pixels = img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
            out[i, :-1] = np.asarray(pixels, dtype=np.float32).ravel() / 255.0
        except (OSError, ValueError):  # ImageError is a ValueError
            out[i, -1] = 1.0
    return out


def _image_cells(frame: pd.DataFrame, column: str) -> list:
    """The cells to read pixels from: the resolved files (`with_image_files`) when the frame has them."""
    resolved = image_file_column(column)
    return frame[resolved if resolved in frame.columns else column].tolist()


def _tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, max_features=20000, sublinear_tf=True, token_pattern=r"(?u)\b\w[\w.%-]*\b"
    )


def _texts(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].astype(object).where(frame[column].notna(), "").astype(str)


class ItemFeatures:
    """Fitted feature extraction for one use case (pickles with the model)."""

    def __init__(self, columns: FeatureColumns, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE):
        self.columns, self.seed, self.image_size = columns, seed, int(image_size)
        self.text = _tfidf()  # the prompt's
        self.column_text: dict[str, TfidfVectorizer] = {}  # text columns with a vocabulary in the training rows
        self.svd: TruncatedSVD | None = None
        self.scaler = StandardScaler() if columns.numeric else None
        self.onehot = OneHotEncoder(handle_unknown="ignore") if columns.categorical else None
        self.medians: dict[str, float] = {}
        self._cache: dict[int, tuple[pd.DataFrame, dict]] = {}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={})

    @property
    def structured(self) -> bool:
        """True when the fitted features go beyond the prompt (a linear model may then leave the prompt out)."""
        c = self.columns
        return bool(c.numeric or c.categorical or c.images or self.column_text)

    def fit(self, frame: pd.DataFrame) -> ItemFeatures:
        text = self.text.fit_transform(frame[PROMPT].fillna(""))
        for c in self.columns.text:
            with contextlib.suppress(ValueError):  # empty vocabulary: no word occurs twice in the column
                self.column_text[c] = _tfidf().fit(_texts(frame, c))
        self.medians = {c: float(pd.to_numeric(frame[c], errors="coerce").median()) for c in self.columns.numeric}
        self.medians = {c: 0.0 if np.isnan(v) else v for c, v in self.medians.items()}
        if self.scaler is not None:
            self.scaler.fit(self._numeric(frame))
        if self.onehot is not None:
            self.onehot.fit(self._categorical(frame))
        components = min(TEXT_COMPONENTS, text.shape[1] - 1, text.shape[0] - 1)
        varies = text.shape[0] > 1 and float((text.power(2).mean(axis=0) - np.square(text.mean(axis=0))).sum()) > 1e-12
        if components >= 2 and varies:  # a constant prompt (the same for every row) has nothing to project
            self.svd = TruncatedSVD(components, random_state=self.seed).fit(text)
        return self

    @contextlib.contextmanager
    def cached(self, *frames: pd.DataFrame) -> Iterator[ItemFeatures]:
        """Compute the blocks of `frames` once while the block runs (the trainer fits many candidates on them)."""
        self._cache = {id(f): (f, {}) for f in frames}
        try:
            yield self
        finally:
            self._cache = {}

    def _numeric(self, frame: pd.DataFrame) -> np.ndarray:
        """Numeric columns with median imputation, plus one missing-value flag per column."""
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

    def _block(self, frame: pd.DataFrame, name: str):
        entry = self._cache.get(id(frame))
        blocks = entry[1] if entry is not None and entry[0] is frame else {}
        if name not in blocks:
            blocks[name] = self._compute(frame, name)
        return blocks[name]

    def _compute(self, frame: pd.DataFrame, name: str):
        n = len(frame)
        if name == "prompt":
            return self.text.transform(frame[PROMPT].fillna(""))
        if name == "columns_text":
            parts = [v.transform(_texts(frame, c)) for c, v in self.column_text.items()]
            return sparse.hstack(parts, format="csr") if parts else sparse.csr_matrix((n, 0))
        if name == "structured":
            parts = [self.scaler.transform(self._numeric(frame))] if self.scaler is not None else []
            if self.onehot is not None:
                parts.append(self.onehot.transform(self._categorical(frame)).toarray())
            return np.hstack(parts) if parts else np.zeros((n, 0))
        if name == "images":
            parts = [image_pixels(_image_cells(frame, c), self.image_size) for c in self.columns.images]
            return np.hstack(parts) if parts else np.zeros((n, 0), dtype=np.float32)
        if name == "projection":
            return self.svd.transform(self._block(frame, "prompt")) if self.svd is not None else np.zeros((n, 0))
        raise KeyError(name)

    def sparse(self, frame: pd.DataFrame, prompt: bool = True) -> sparse.csr_matrix:
        """Features for linear models: the prompt's TF-IDF (when `prompt`), text columns, structured, pixels."""
        if not prompt and not self.structured:
            raise ValueError("without the prompt there are no features: the sheet has no feature columns")
        parts = [self._block(frame, "prompt")] if prompt else []
        parts += [self._block(frame, "columns_text")]
        parts += [sparse.csr_matrix(self._block(frame, b)) for b in ("structured", "images")]
        return sparse.hstack(parts, format="csr")

    def dense(self, frame: pd.DataFrame) -> np.ndarray:
        """Structured columns, image pixels and the SVD projection of the prompt (for trees and neighbours)."""
        parts = [self._block(frame, b) for b in ("structured", "images", "projection")]
        return np.hstack(parts).astype(np.float32)
