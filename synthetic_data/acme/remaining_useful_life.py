"""Remaining useful life: a health snapshot of a production asset -> days of useful life left (0..5000).

Every asset (hidden dimension: class, commissioning date, typical load, cycle rate) has a design life; the
remaining life shrinks with age, load and rising vibration/temperature trends and grows with maintenance, plus
noise (heavier for ~5% of labels). Drifted batch: more spindles, run ~18 points harder, so less life remains, and
a new asset class, gearboxes (longer-lived; in the asset register from the start, reporting only in the drifted
batch): a class only their labelled snapshots can teach.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np

from synthetic_data import blocks as g

PREFIX = "RUL"
PRIMARY = "acme_raw.asset_health_snapshots"
LABELS = "acme_raw.remaining_useful_life_labels"
COLUMNS = {
    "item_ref": "string",
    "asset_id": "string",
    "asset_class": "string",
    "snapshot_date": "date",
    "age_days": "integer",
    "cycles": "integer",
    "avg_load_pct": "double",
    "maintenance_count": "integer",
    "days_since_maintenance": "integer",
    "vibration_trend": "double",
    "temperature_trend": "double",
}
DIMENSIONS: dict = {}
ASSETS = "_assets"  # hidden: assets are not a source table of this use case

ASSET_CLASSES = ["pump", "compressor", "conveyor", "spindle", "gearbox"]
ASSET_PREFIX = ["PMP", "CMP", "CNV", "SPN", "GBX"]
DESIGN_LIFE_DAYS = np.array([5000.0, 4500.0, 6000.0, 3500.0, 8000.0])
CYCLES_PER_DAY = np.array([2_000.0, 800.0, 5_000.0, 15_000.0, 1_000.0])
CLASS_MIX = [0.3, 0.25, 0.25, 0.2]  # of the assets drawn; the last NEW_CLASS_SHARE of them are gearboxes
GEARBOX = 4
NEW_CLASS_SHARE = 0.1
DRIFTED_CLASS_WEIGHT = np.array([1.0, 1.0, 1.0, 4.0, 8.0])


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    n = g.dimension_size(rows, per=10, low=40)
    kind = g.draw(rng, CLASS_MIX, n)
    kind[n - round(n * NEW_CLASS_SHARE) :] = GEARBOX
    commissioned = rng.integers(g.epoch_days(date(2013, 1, 1)), g.epoch_days(date(2023, 12, 1)), n)
    return {
        ASSETS: {
            "asset_id": np.array([f"{ASSET_PREFIX[k]}-{i:04d}" for i, k in enumerate(kind, start=1)]),
            "kind": kind,
            "commissioned": commissioned,
            "load": np.clip(rng.normal(60, 12, n), 10, 120),
            "cycle_rate": CYCLES_PER_DAY[kind] * rng.uniform(0.7, 1.3, n),
        }
    }


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    assets = ctx.dims[ASSETS]
    weights = DRIFTED_CLASS_WEIGHT[assets["kind"]] if drifted else (assets["kind"] != GEARBOX).astype(float)
    unit = rng.choice(weights.shape[0], size=n, p=weights / weights.sum())
    kind = assets["kind"][unit]

    snapshot = ctx.dates()
    age = np.maximum(snapshot - assets["commissioned"][unit], 0)
    load = np.clip(assets["load"][unit] + rng.normal(0, 5, n) + 18 * drifted, 0, 150)
    cycles = age * assets["cycle_rate"][unit] * load / 60
    maintenance = rng.poisson(age / 365 * 1.5)
    since_maintenance = np.minimum(rng.exponential(120, n), age).astype(np.int64)
    vibration_trend = rng.normal(0.02, 0.05, n) + 0.002 * (load - 60)
    temperature_trend = rng.normal(0.01, 0.04, n) + 0.001 * (load - 60)

    life = DESIGN_LIFE_DAYS[kind] * (1.3 - 0.006 * load)
    rul = (
        life
        - age
        - 4000 * np.maximum(vibration_trend, 0)
        - 3000 * np.maximum(temperature_trend, 0)
        + 25 * np.minimum(maintenance, 30)
        - 0.8 * since_maintenance
    )
    rul = rul + rng.normal(0, 250, n) + rng.normal(0, 0.12, n) * np.abs(rul)
    noisy = rng.random(n) < ctx.label_noise
    rul = np.where(noisy, rul * rng.uniform(0.4, 1.6, n), rul)
    rul = np.clip(rul, 0, 5000).round(1)

    columns = {
        "item_ref": ctx.refs,
        "asset_id": assets["asset_id"][unit],
        "asset_class": g.pick(ASSET_CLASSES, kind),
        "snapshot_date": snapshot,
        "age_days": np.clip(age, 0, 20_000),
        "cycles": np.clip(cycles, 0, 100_000_000).astype(np.int64),
        "avg_load_pct": load.round(1),
        "maintenance_count": np.clip(maintenance, 0, 1000),
        "days_since_maintenance": np.clip(since_maintenance, 0, 20_000),
        "vibration_trend": g.with_nulls(rng, vibration_trend.round(4)),
        "temperature_trend": g.with_nulls(rng, temperature_trend.round(4)),
    }

    def conflicts(rng: np.random.Generator, rows: np.ndarray) -> list[str]:
        other = np.clip(rul[rows] * rng.uniform(0.6, 0.85, rows.shape[0]) - 50, 0, 5000).round(1)
        other = np.where(other == rul[rows], rul[rows] + 100, other)
        return [json.dumps(v) for v in other.tolist()]

    event_us = snapshot.astype(np.int64) * g.US_PER_DAY + 12 * g.US_PER_HOUR
    labels = g.label_batch(ctx, [json.dumps(v) for v in rul.tolist()], event_us, conflicts, noisy=noisy)
    return g.Block(columns, labels)
