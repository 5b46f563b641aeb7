"""Sensor anomaly detection: a summarised window of a production-line sensor -> anomaly type (or none).

Each anomaly leaves its trace in the summary: spikes (spike count, max far above mean), drift (steep slope,
wide range), stuck (flatline ratio, tiny std), noise (large std). ~65% none. Drifted batch: ageing
vibration sensors -- noisier windows, more vibration sensors and far more drift anomalies.
"""

from __future__ import annotations

import numpy as np

from synthetic_data import blocks as g

PREFIX = "AD"
PRIMARY = "acme_raw.sensor_windows"
LABELS = "acme_raw.anomaly_detection_labels"
COLUMNS = {
    "item_ref": "string",
    "sensor_id": "string",
    "sensor_type": "string",
    "window_start": "timestamp",
    "mean_value": "double",
    "std_value": "double",
    "min_value": "double",
    "max_value": "double",
    "spike_count": "integer",
    "slope": "double",
    "flatline_ratio": "double",
}
DIMENSIONS: dict = {}

CLASSES = ["none", "spike", "drift", "stuck", "noise"]
NONE, SPIKE, DRIFT, STUCK, NOISE = range(5)
PRIOR = {False: [0.65, 0.10, 0.10, 0.07, 0.08], True: [0.45, 0.10, 0.27, 0.07, 0.11]}
SENSOR_TYPES = ["temperature", "pressure", "vibration", "flow"]
TYPE_MIX = {False: [0.35, 0.25, 0.25, 0.15], True: [0.2, 0.15, 0.5, 0.15]}
SENSOR_PREFIX = np.array(["TMP-", "PRS-", "VIB-", "FLW-"])
LEVEL = np.array([60.0, 5.0, 3.0, 120.0])  # typical reading per sensor type
SCALE = np.array([1.5, 0.2, 0.4, 5.0])  # typical window std per sensor type
SENSORS_PER_TYPE = 40


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    return {}


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    kind = g.draw(rng, TYPE_MIX[drifted], n)
    true = g.draw(rng, PRIOR[drifted], n)
    scale = SCALE[kind]

    level = LEVEL[kind] * rng.normal(1, 0.03, n)
    std = scale * rng.lognormal(0, 0.4, n) * (1.8 if drifted else 1.0)
    std = np.where(true == NOISE, std * rng.uniform(1.8, 4, n), std)
    std = np.where(true == STUCK, std * rng.uniform(0.05, 0.4, n), std)
    spikes = np.where(true == SPIKE, rng.poisson(3, n) + 1, rng.poisson(0.5, n))
    slope = rng.normal(0, 0.015, n) * scale
    slope = np.where(true == DRIFT, rng.choice([-1, 1], n) * rng.uniform(0.02, 0.1, n) * scale, slope)
    flatline = np.where(true == STUCK, rng.beta(4, 3, n), rng.beta(1, 25, n))
    low = level - std * rng.uniform(2, 3, n) - np.abs(slope) * 30 * (slope < 0)
    high = level + std * rng.uniform(2, 3, n) + np.abs(slope) * 30 * (slope > 0)
    high = high + np.where(true == SPIKE, scale * rng.uniform(2, 8, n), (spikes > 0) * scale * rng.uniform(0, 3, n))

    label, noisy = g.resample(rng, true, PRIOR[drifted], ctx.label_noise)
    window_start = ctx.timestamps_us()
    sensor_number = np.char.zfill(rng.integers(1, SENSORS_PER_TYPE + 1, n).astype(str), 3)
    columns = {
        "item_ref": ctx.refs,
        "sensor_id": np.char.add(SENSOR_PREFIX[kind], sensor_number),
        "sensor_type": g.pick(SENSOR_TYPES, kind),
        "window_start": window_start,
        "mean_value": level.round(4),
        "std_value": np.clip(std, 0, 1000).round(4),
        "min_value": low.round(4),
        "max_value": high.round(4),
        "spike_count": np.clip(spikes, 0, 10_000),
        "slope": g.with_nulls(rng, slope.round(5)),
        "flatline_ratio": g.with_nulls(rng, np.clip(flatline, 0, 1).round(4)),
    }
    labels = g.label_batch(
        ctx, g.enum_json(CLASSES, label), window_start, g.enum_conflicts(CLASSES, label), noisy=noisy
    )
    return g.Block(columns, labels)
