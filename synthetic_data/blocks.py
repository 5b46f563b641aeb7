"""The building blocks of the synthetic use cases: block contexts, seeded draws, labels with noise and
conflicts, dates, images. Each module in ``synthetic_data/acme/`` builds its tables from these (see
``synthetic_data/generator.py`` for the contract and how the data stay deterministic)."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ontos_pipeline.platform.ddl import SPEC_TYPES, arrow_type

# Spec column types -> Arrow types (the same mapping the lakehouse uses).
ARROW_TYPES: dict[str, pa.DataType] = {name: arrow_type(sql) for name, sql in SPEC_TYPES.items()}

LABELS_SCHEMA = pa.schema(
    [
        ("item_ref", pa.string()),
        ("label_data", pa.string()),  # JSON text of a value valid against the template's response_schema
        ("confidence", pa.float64()),
        ("labeled_by", pa.string()),
        ("labeled_at", pa.timestamp("us", tz="UTC")),
        ("allowed_uses", pa.list_(pa.string())),
        ("prohibited_uses", pa.list_(pa.string())),
    ]
)

BLOCK_ROWS = 10_000  # rows per RNG block; fixed so that chunk_rows never changes the data
LABEL_NOISE = 0.05  # share of labels resampled at random
NULL_RATE = 0.02  # share of nulls in the nullable numeric columns
CONFLICT_RATE = 0.005  # share of items with a second, different label from another labeler

LABELERS = ("acme_qa_import", "vendor_a")
LABELER_WEIGHTS = (0.8, 0.2)
CONFLICT_LABELER = "vendor_b"
ALL_USES = ("training", "evaluation", "serving")
NO_TRAINING_USES = ("evaluation", "serving")

# The normal batch covers 2024, the drifted batch the first quarter of 2025.
PERIODS = {False: (date(2024, 1, 1), date(2025, 1, 1)), True: (date(2025, 1, 1), date(2025, 4, 1))}
EPOCH = date(1970, 1, 1)
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR


@dataclass(frozen=True)
class GeneratedTable:
    name: str  # "acme_raw.pcb_inspections", as written in the spec
    schema: pa.Schema
    # lazy; each call regenerates identical data, chunk by chunk
    batches: Callable[[], Iterator[pa.RecordBatch]]
    # the primary table only: a regex matching every item_ref the normal batch can generate (at any row count);
    # rows of the table that do not match landed there later and survive a regeneration
    generated_refs: str | None = None


@dataclass(frozen=True)
class BlockContext:
    """What a use-case module needs to generate one block of rows."""

    use_case: str
    seed: int
    drifted: bool
    start: int  # index of the block's first row within its batch
    n: int  # rows in this block
    total: int  # rows in the whole batch
    refs: pa.Array  # item_ref of the block's rows
    dims: Mapping[str, Mapping[str, np.ndarray]]  # dimension columns (incl. hidden "_" columns)
    image_dir: Path
    rng: np.random.Generator = field(repr=False)
    files_root: Path | None = None  # image cells are relative to it when given (relocatable tables)

    def image_cell(self, path: Path) -> str:
        """The table cell naming an image file: relative to `files_root` (POSIX) when given, else absolute."""
        if self.files_root is None:
            return str(path)
        return path.relative_to(self.files_root).as_posix()

    def child_rng(self, purpose: str) -> np.random.Generator:
        """An independent generator for one purpose (labels, images, ...) of this block."""
        return stable_rng(self.seed, self.use_case, self.stream, self.start // BLOCK_ROWS, purpose)

    @property
    def stream(self) -> str:
        return "drifted" if self.drifted else "normal"

    @property
    def label_noise(self) -> float:
        """Share of noisy labels: LABEL_NOISE in the normal batch (bulk labelling makes mistakes); none in the
        drifted batch, whose labels are the ground truth the demo's users know when they correct an answer and
        the held-out items are scored against (gold labels)."""
        return 0.0 if self.drifted else LABEL_NOISE

    def timestamps_us(self) -> np.ndarray:
        """Event times (µs since epoch) spread over the batch's period in row order, with jitter."""
        first, end = (epoch_days(d) * US_PER_DAY for d in PERIODS[self.drifted])
        position = (self.start + np.arange(self.n) + self.rng.random(self.n)) / max(self.total, 1)
        return (first + position * (end - first)).astype(np.int64)

    def dates(self) -> np.ndarray:
        """Event dates (days since epoch, int32) spread over the batch's period in row order."""
        return (self.timestamps_us() // US_PER_DAY).astype(np.int32)


@dataclass(frozen=True)
class Block:
    columns: Mapping[str, Any]  # primary-table columns: numpy arrays (NaN = null), lists or Arrow arrays
    labels: pa.RecordBatch  # LABELS_SCHEMA
    write_files: Callable[[], None] | None = None  # side files (images) of the primary rows


def schema_of(columns: Mapping[str, str]) -> pa.Schema:
    return pa.schema([(name, ARROW_TYPES[kind]) for name, kind in columns.items()])


def record_batch(columns: Mapping[str, Any], schema: pa.Schema) -> pa.RecordBatch:
    """Columns (in any order; names starting with "_" are hidden and dropped) -> a batch of the schema."""
    visible = {name for name in columns if not name.startswith("_")}
    if visible != set(schema.names):
        raise ValueError(f"generated columns {sorted(visible)} differ from the declared {schema.names}")
    return pa.RecordBatch.from_arrays([_to_arrow(columns[f.name], f.type) for f in schema], schema=schema)


def _to_arrow(values: Any, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.Array):
        return values if values.type == type_ else values.cast(type_)
    if pa.types.is_floating(type_):  # NaN means null
        return pa.array(np.asarray(values, dtype=np.float64), type=type_, from_pandas=True)
    return pa.array(values, type=type_)


# --- randomness and columns --------------------------------------------------------------------------------


def stable_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A numpy Generator seeded from the seed and keys (strings hashed stably, not with hash())."""
    words = [int(seed) % 2**64]
    for key in keys:
        words.append(key if isinstance(key, int) else zlib.crc32(key.encode()))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def item_refs(prefix: str, drifted: bool, start: int, n: int) -> pa.Array:
    """Item refs: "DD-0000001", ... in the normal batch and "DD-D000001", ... in the drifted one."""
    numbers = pc.cast(pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)), pa.string())
    head = f"{prefix}-D" if drifted else f"{prefix}-"
    return pc.binary_join_element_wise(head, pc.utf8_lpad(numbers, 6 if drifted else 7, "0"), "")


def dimension_size(rows: int, *, per: int = 20, low: int = 20, high: int = 300) -> int:
    """Rows of a dimension table: one per `per` primary rows, between low and high."""
    return int(min(max(rows // per, low), high))


def dimension_ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}-{i:04d}" for i in range(1, n + 1)])


def pick(values: Sequence[str], index: np.ndarray) -> pa.Array:
    """values[index] as an Arrow string array (vectorised)."""
    return pc.take(pa.array(list(values), pa.string()), pa.array(np.asarray(index, dtype=np.int64)))


def draw(rng: np.random.Generator, probabilities: Sequence[float], n: int) -> np.ndarray:
    """n category indices drawn with the given (normalised) probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    return rng.choice(len(p), size=n, p=p / p.sum())


def draw_each(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One category index per row of an (n, k) matrix of per-row probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(probabilities.shape[0]) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), probabilities.shape[1] - 1)


def with_nulls(rng: np.random.Generator, values: np.ndarray, rate: float = NULL_RATE) -> np.ndarray:
    """A float copy of values with about `rate` of them set to NaN (written as null)."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[rng.random(out.shape[0]) < rate] = np.nan
    return out


def resample(
    rng: np.random.Generator, classes: np.ndarray, prior: Sequence[float], rate: float = LABEL_NOISE
) -> tuple[np.ndarray, np.ndarray]:
    """Label noise: about `rate` of the labels are redrawn from the prior (which keeps the class mix)."""
    noisy = rng.random(classes.shape[0]) < rate
    out = classes.copy()
    out[noisy] = draw(rng, prior, int(noisy.sum()))
    return out, noisy


# --- labels ------------------------------------------------------------------------------------------------

ConflictFn = Callable[[np.random.Generator, np.ndarray], Sequence[str]]


def label_batch(
    ctx: BlockContext,
    label_json: pa.Array | Sequence[str],
    event_us: np.ndarray,
    conflict_json: ConflictFn,
    *,
    noisy: np.ndarray | None = None,
    training_allowed: np.ndarray | None = None,
) -> pa.RecordBatch:
    """The labels of one block: one row per item, plus conflicting second labels for a few items.

    conflict_json(rng, rows) returns, for the given row positions, label JSON that differs from label_json.
    Noisy labels get a lower confidence. Items whose training_allowed is False may not be used for training.
    """
    rng = ctx.child_rng("labels")
    n = ctx.n
    confidence = rng.beta(18, 2, n)
    if noisy is not None:
        confidence[noisy] = rng.beta(6, 4, int(noisy.sum()))
    labeled_by = pick(LABELERS, draw(rng, LABELER_WEIGHTS, n))
    labeled_at = event_us + rng.integers(US_PER_HOUR, 72 * US_PER_HOUR, n)

    k = 0 if ctx.drifted else round(n * CONFLICT_RATE)  # gold labels: one per item
    if ctx.start == 0 and n and not ctx.drifted:
        k = max(k, 1)  # every normal batch has conflicts, however small
    rows = np.sort(rng.choice(n, size=k, replace=False))
    allowed = np.ones(n, dtype=bool) if training_allowed is None else np.asarray(training_allowed, dtype=bool)

    refs = pa.concat_arrays([ctx.refs, ctx.refs.take(pa.array(rows, pa.int64()))])
    data = pa.concat_arrays([_to_arrow(label_json, pa.string()), pa.array(list(conflict_json(rng, rows)), pa.string())])
    confidence = np.concatenate([confidence, rng.beta(6, 3, k)])
    labeled_by = pa.concat_arrays([labeled_by, pa.array([CONFLICT_LABELER] * k, pa.string())])
    labeled_at = np.concatenate([labeled_at, labeled_at[rows] + rng.integers(2 * US_PER_DAY, 30 * US_PER_DAY, k)])
    restricted = ~np.concatenate([allowed, allowed[rows]])
    uses = pa.array([list(ALL_USES), list(NO_TRAINING_USES)], pa.list_(pa.string()))
    prohibited = pa.array([[], ["training"]], pa.list_(pa.string()))
    index = pa.array(restricted.astype(np.int64))
    return pa.RecordBatch.from_arrays(
        [
            refs,
            data,
            pa.array(np.round(confidence, 3)),
            labeled_by,
            _to_arrow(labeled_at, LABELS_SCHEMA.field("labeled_at").type),
            pc.take(uses, index),
            pc.take(prohibited, index),
        ],
        schema=LABELS_SCHEMA,
    )


def enum_json(classes: Sequence[str], index: np.ndarray) -> pa.Array:
    """JSON text of classes[index] ('"solder_bridge"')."""
    return pick([json.dumps(c) for c in classes], index)


def enum_conflicts(classes: Sequence[str], labels: np.ndarray) -> ConflictFn:
    """Conflicting labels for an enum: another class than the one given."""

    def conflicts(rng: np.random.Generator, rows: np.ndarray) -> list[str]:
        other = (labels[rows] + rng.integers(1, len(classes), rows.shape[0])) % len(classes)
        return [json.dumps(classes[i]) for i in other]

    return conflicts


# --- dates and text ----------------------------------------------------------------------------------------


def epoch_days(d: date) -> int:
    return (d - EPOCH).days


def to_date(days: int | np.integer) -> date:
    return EPOCH + timedelta(days=int(days))


def to_datetime(us: int | np.integer) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=int(us))


DATE_STYLES = ("%Y-%m-%d", "%d %B %Y", "%B %d, %Y", "%d %b %Y", "%m/%d/%Y", "%d.%m.%Y")


def format_date(d: date, style: int) -> str:
    """A date written in one of DATE_STYLES (ISO, "4 March 2024", "March 4, 2024", ...)."""
    text = d.strftime(DATE_STYLES[style % len(DATE_STYLES)])
    return text.replace(" 0", " ") if style % len(DATE_STYLES) in (1, 2, 3) else text


# --- images ------------------------------------------------------------------------------------------------


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal, deterministic PNG (8-bit RGB, no interlace) of an (h, w, 3) uint8 array."""
    height, width, _ = rgb.shape
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # filter byte 0 + pixels, per scanline
    raw[:, 1:] = np.asarray(rgb, dtype=np.uint8).reshape(height, width * 3)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def image_path(image_dir: Path, item_ref: str) -> Path:
    """image_dir/<2-hex-char shard>/<item_ref>.png (shard from a hash of the item_ref)."""
    shard = hashlib.md5(item_ref.encode()).hexdigest()[:2]
    return image_dir / shard / f"{item_ref}.png"


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write the PNG of rgb to path (its directory must exist), unless the file already holds these bytes."""
    data = png_bytes(rgb)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    path.write_bytes(data)


def write_pngs(paths: Sequence[Path], images: Iterable[np.ndarray]) -> None:
    """write_png for many images, creating their directories first."""
    for directory in {path.parent for path in paths}:
        directory.mkdir(parents=True, exist_ok=True)
    for path, rgb in zip(paths, images, strict=True):
        write_png(path, rgb)
