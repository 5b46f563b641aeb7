"""Deterministic synthetic data for the Acme Instruments demo use cases.

``generate_tables(use_case, rows=..., drifted_rows=..., seed=..., image_dir=...)`` returns, lazily:

1. every source table of the use case's sheet (the primary table first, then its dimension tables),
2. the ground-truth labels table (``labels.import_table`` of the spec, schema ``LABELS_SCHEMA``),
3. a held-out drifted batch: ``<primary>_drifted`` and ``<labels>_drifted``.

How the data stay deterministic and memory stays flat: a batch (normal or drifted) is produced in fixed
blocks of ``BLOCK_ROWS`` rows. Block ``b`` draws from a numpy Generator seeded from
``(seed, use case, stream, b)``, so the data depend only on ``(use case, rows, drifted_rows, seed)`` -- not on
``chunk_rows`` and not on which table is read first. The primary table and its labels table are two views of
the same block (labels are a noisy function of the block's inputs; the drifted batch's labels are gold: no noise,
no conflicting second labels), so they always agree. Blocks are then
re-cut into ``chunk_rows`` batches. Dimension tables are small (at most a few hundred rows) and built once
per call. Images are written to ``image_dir`` while the primary table's batches are read; their cells are
paths relative to ``files_root`` when it is given (so a copied home or volume still finds them).

Each use case is one module in ``synthetic_data/acme/`` that declares its tables (``PRIMARY``, ``COLUMNS``,
``DIMENSIONS``, ``LABELS``, ``PREFIX``) and implements ``dimensions(rng, rows)`` and ``block(ctx)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from synthetic_data.acme import (
    anomaly_detection,
    calibration_insights,
    defect_detection,
    document_extraction,
    invoice_extraction,
    predictive_maintenance,
    remaining_useful_life,
)
from synthetic_data.blocks import (
    BLOCK_ROWS,
    LABELS_SCHEMA,
    Block,
    BlockContext,
    GeneratedTable,
    item_refs,
    record_batch,
    schema_of,
    stable_rng,
)

GENERATORS: dict[str, ModuleType] = {
    module.__name__.rsplit(".", 1)[-1]: module
    for module in (
        defect_detection,
        predictive_maintenance,
        anomaly_detection,
        calibration_insights,
        document_extraction,
        remaining_useful_life,
        invoice_extraction,
    )
}


def generate_tables(
    use_case: str,
    *,
    rows: int,
    drifted_rows: int,
    seed: int,
    image_dir: Path,
    files_root: Path | None = None,
    chunk_rows: int = 50_000,
) -> list[GeneratedTable]:
    """The use case's source tables, labels table and drifted batch (see the module docstring)."""
    if use_case not in GENERATORS:
        raise ValueError(f"unknown synthetic generator {use_case!r}; known generators: {sorted(GENERATORS)}")
    if rows < 0 or drifted_rows < 0:
        raise ValueError(f"rows and drifted_rows must be >= 0, got {rows} and {drifted_rows}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    module = GENERATORS[use_case]
    image_dir = Path(image_dir).resolve()
    files_root = Path(files_root).resolve() if files_root is not None else None
    dims = module.dimensions(stable_rng(seed, use_case, "dimensions"), rows)
    primary_schema = schema_of(module.COLUMNS)

    def batch_tables(drifted: bool, n: int) -> list[GeneratedTable]:
        suffix = "_drifted" if drifted else ""
        blocks = partial(_blocks, module, use_case, seed, drifted, n, dims, image_dir, files_root)
        return [
            GeneratedTable(
                module.PRIMARY + suffix,
                primary_schema,
                partial(_primary_batches, blocks, primary_schema, chunk_rows),
            ),
            GeneratedTable(module.LABELS + suffix, LABELS_SCHEMA, partial(_label_batches, blocks, chunk_rows)),
        ]

    primary, labels = batch_tables(False, rows)
    primary = dataclasses.replace(primary, generated_refs=f"^{re.escape(module.PREFIX)}-[0-9]{{7,}}$")
    dimension_tables = []
    for name, columns in module.DIMENSIONS.items():
        batch = record_batch(dims[name], schema_of(columns))
        dimension_tables.append(GeneratedTable(name, batch.schema, partial(_table_batches, batch, chunk_rows)))
    return [primary, *dimension_tables, labels, *batch_tables(True, drifted_rows)]


# --- blocks and chunks -------------------------------------------------------------------------------------


def _blocks(module, use_case, seed, drifted, total, dims, image_dir, files_root) -> Iterator[Block]:
    stream = "drifted" if drifted else "normal"
    for index, start in enumerate(range(0, total, BLOCK_ROWS)):
        n = min(BLOCK_ROWS, total - start)
        ctx = BlockContext(
            use_case=use_case,
            seed=seed,
            drifted=drifted,
            start=start,
            n=n,
            total=total,
            refs=item_refs(module.PREFIX, drifted, start, n),
            dims=dims,
            image_dir=image_dir,
            files_root=files_root,
            rng=stable_rng(seed, use_case, stream, index),
        )
        yield module.block(ctx)


def _primary_batches(blocks, schema: pa.Schema, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    def batches():
        for block in blocks():
            if block.write_files is not None:
                block.write_files()
            yield record_batch(block.columns, schema)

    return _rechunk(batches(), chunk_rows)


def _label_batches(blocks, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    return _rechunk((block.labels for block in blocks()), chunk_rows)


def _table_batches(batch: pa.RecordBatch, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    return _rechunk(iter([batch]), chunk_rows)


def _rechunk(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches into batches of exactly chunk_rows rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows < chunk_rows:
            continue
        merged = pa.concat_batches(pending)
        offset = 0
        while merged.num_rows - offset >= chunk_rows:
            yield merged.slice(offset, chunk_rows)
            offset += chunk_rows
        pending = [merged.slice(offset)] if offset < merged.num_rows else []
        pending_rows = merged.num_rows - offset
    if pending_rows:
        yield pa.concat_batches(pending)
