"""Pre-labelling: the champion model proposes a response, with its confidence, for unlabelled training-sheet items.

Scoring runs on the executors (`mapInPandas`: the champion is loaded once per partition from the registry by its
version, so every partition uses the same model even if the alias moves meanwhile). A proposal is never a training
label by itself: it stays `pending` (source `model`) until a person approves or edits it (`ontos review`). Without
a champion there is no proposer and nothing is loaded; with a local SQLite registry, finding that out reads the
registry file directly (no MLflow store start-up, no database created).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame

from ontos_pipeline.platform.images import image_file_column, with_image_files_spark
from ontos_pipeline.platform.model_store import CHAMPION, ModelStore
from ontos_pipeline.specs import ITEM_KEY

PROPOSAL_SCHEMA = f"{ITEM_KEY} string, response string, confidence double"


def response_text(value: object) -> str:
    """A proposed value as JSON text, in the compact sorted form canonical labels use."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ChampionProposer:
    """Sheet rows (item_ref + the item columns) -> item_ref, response (JSON text), confidence, scored in Spark."""

    store: ModelStore
    use_case: str
    version: str
    input_columns: tuple[str, ...]
    image_columns: tuple[str, ...] = ()
    image_root: str | None = None  # where relative image cells resolve (the lakehouse files folder)

    @property
    def uri(self) -> str:
        return self.store.version_uri(self.use_case, self.version)

    def __call__(self, sheet_df: DataFrame) -> DataFrame:
        store, uri, columns = self.store, self.uri, list(self.input_columns)
        files = [image_file_column(c) for c in self.image_columns]

        def propose(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            model = store.load(uri)  # once per partition
            for batch in batches:
                answers = model.predict(batch[[*columns, *files]]) if len(batch) else []
                yield pd.DataFrame(
                    {
                        ITEM_KEY: batch[ITEM_KEY].astype(str),
                        "response": [response_text(a["response"]) for a in answers],
                        "confidence": [float(a["confidence"]) for a in answers],
                    }
                )

        items = sheet_df.select(ITEM_KEY, *[c for c in columns if c != ITEM_KEY])
        if files:
            items = with_image_files_spark(items, self.image_columns, self.image_root)
        return items.mapInPandas(propose, PROPOSAL_SCHEMA)


def no_champion(store: ModelStore, use_case: str) -> bool:
    """True when a local SQLite registry certainly has no champion for `use_case` (no file, or no such alias row);
    False means: ask MLflow (another registry, or a file this check cannot read)."""
    prefix = "sqlite:///"
    if not store.registry_uri.startswith(prefix):
        return False
    path = Path(store.registry_uri.removeprefix(prefix))
    if not path.exists():
        return True
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT 1 FROM registered_model_aliases WHERE name = ? AND alias = ?",
                (store.model_name(use_case), CHAMPION),
            ).fetchone()
    except sqlite3.Error:
        return False
    return row is None


def champion_proposer(
    store: ModelStore, use_case: str, sheet_columns: Sequence[str], image_root: str | None = None
) -> tuple[ChampionProposer | None, str]:
    """The champion's proposer for this use case, or None (with the reason) when there is no usable champion.

    Without a champion this costs one registry lookup (`no_champion`). With one, the model is loaded once here to
    learn the columns it reads: a champion that cannot be loaded or needs columns the sheet lacks proposes nothing
    (the training sheet is still built: a broken champion must not block the retrain that replaces it)."""
    champion = None if no_champion(store, use_case) else store.version(use_case, CHAMPION)
    if champion is None:
        return None, f"no {CHAMPION} model for {use_case} yet: unlabelled items stay without a response"
    version = str(champion.version)
    try:
        model = store.load(store.version_uri(use_case, version))
    except Exception as exc:  # any load failure (missing artifacts, a bad environment) means no proposals
        return None, f"{CHAMPION} version {version} cannot be loaded ({type(exc).__name__}: {exc}): no proposals"
    missing = sorted(set(model.input_columns) - set(sheet_columns))
    if missing:
        return None, f"{CHAMPION} version {version} reads columns the sheet lacks ({', '.join(missing)}): no proposals"
    images = tuple(model.columns.images) if image_root else ()
    return ChampionProposer(store, use_case, version, tuple(model.input_columns), images, image_root), (
        f"unlabelled items proposed by {CHAMPION} version {version}"
    )
