"""Predictive maintenance: telemetry windows of test equipment -> failure within 30 days.

Failing equipment shows higher vibration, bearing temperature, pressure variance and error counts; older,
riskier units fail more often. ~12% failures. Drifted batch: an ageing, harder-driven fleet at Penang --
more vibration and load, site mix shifted to Penang, ~22% failures.
"""

from __future__ import annotations

import numpy as np

from synthetic_data import blocks as g

PREFIX = "PM"
PRIMARY = "acme_raw.equipment_telemetry"
LABELS = "acme_raw.predictive_maintenance_labels"
COLUMNS = {
    "item_ref": "string",
    "equipment_id": "string",
    "window_end": "timestamp",
    "vibration_rms": "double",
    "bearing_temp_c": "double",
    "pressure_std": "double",
    "runtime_hours": "double",
    "error_count": "integer",
    "load_pct": "double",
}
EQUIPMENT = "acme_raw.equipment"
DIMENSIONS = {
    EQUIPMENT: {
        "equipment_id": "string",
        "model": "string",
        "site": "string",
        "install_year": "integer",
        "criticality": "string",
    }
}

CLASSES = ["no_failure", "failure"]
FAILURE_RATE = {False: 0.12, True: 0.22}
MODELS = ["AX-100", "AX-200", "BX-500", "CX-900"]
MODEL_RISK = np.array([1.0, 0.85, 1.2, 1.5])
SITES = ["Austin", "Penang", "Guadalajara"]
CRITICALITY = ["low", "medium", "high"]


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    n = g.dimension_size(rows)
    model = g.draw(rng, [0.35, 0.3, 0.2, 0.15], n)
    install_year = rng.integers(2000, 2024, n)
    risk = np.exp(rng.normal(0, 0.4, n)) * (1 + (2024 - install_year) / 15) * MODEL_RISK[model]
    return {
        EQUIPMENT: {
            "equipment_id": g.dimension_ids("EQ", n),
            "model": np.array(MODELS)[model],
            "site": np.array(SITES)[g.draw(rng, [0.4, 0.35, 0.25], n)],
            "install_year": install_year,
            "criticality": np.array(CRITICALITY)[g.draw(rng, [0.3, 0.45, 0.25], n)],
            "_risk": risk / risk.mean(),  # relative failure risk of the unit
            "_utilisation": rng.uniform(0.35, 0.9, n),  # share of the year the unit runs
        }
    }


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    equipment = ctx.dims[EQUIPMENT]
    weights = np.ones(len(equipment["equipment_id"]))
    if drifted:
        weights[equipment["site"] == "Penang"] = 5.0
    unit = rng.choice(weights.shape[0], size=n, p=weights / weights.sum())

    fail = rng.random(n) < np.clip(FAILURE_RATE[drifted] * equipment["_risk"][unit], 0, 0.9)
    early = ~fail & (rng.random(n) < 0.08)  # degrading but still weeks from failure: hard negatives
    signal = fail + 0.6 * early

    load = rng.normal(62 + 12 * drifted, 14, n) + 6 * signal
    vibration = rng.lognormal(np.log(2.8) + 0.45 * signal + 0.004 * (load - 62), 0.35) + 1.5 * drifted
    bearing = rng.normal(58 + 9 * signal + 0.2 * (load - 62), 7) + 4 * drifted
    pressure_std = rng.gamma(4.0, 0.15 + 0.08 * signal)
    errors = rng.poisson(1.2 + 3.0 * signal)
    window_end = ctx.timestamps_us()
    age_years = window_end / g.US_PER_DAY / 365.25 + 1970 - equipment["install_year"][unit]
    runtime = age_years * 8760 * equipment["_utilisation"][unit] + rng.normal(0, 300, n)

    label, noisy = g.resample(
        rng, fail.astype(np.int64), [1 - FAILURE_RATE[drifted], FAILURE_RATE[drifted]], ctx.label_noise
    )
    columns = {
        "item_ref": ctx.refs,
        "equipment_id": equipment["equipment_id"][unit],
        "window_end": window_end,
        "vibration_rms": np.clip(vibration, 0, 50).round(3),
        "bearing_temp_c": g.with_nulls(rng, np.clip(bearing, -20, 200).round(2)),
        "pressure_std": g.with_nulls(rng, np.clip(pressure_std, 0, 20).round(3)),
        "runtime_hours": np.clip(runtime, 0, 200_000).round(1),
        "error_count": np.clip(errors, 0, 1000),
        "load_pct": np.clip(load, 0, 150).round(1),
    }
    labels = g.label_batch(ctx, g.enum_json(CLASSES, label), window_end, g.enum_conflicts(CLASSES, label), noisy=noisy)
    return g.Block(columns, labels)
