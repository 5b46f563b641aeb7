"""Calibration insights: a Monte-Carlo calibration run -> one recommended action (a fixed vocabulary).

Runs carry latent faults (offset, gain, worn probe, uncontrolled environment, overdue service); the action is
chosen by ordered rules, applied with some slack, over the *observed* ambient/humidity, days since service,
p95 error, std, gain error and bias; then ~5% of labels are redrawn. Drifted batch: a hot summer lab
(ambient +3 C, more uncontrolled runs) and more runs on overdue instruments.
"""

from __future__ import annotations

import json

import numpy as np

from synthetic_data import blocks as g

PREFIX = "CI"
PRIMARY = "acme_raw.calibration_runs"
LABELS = "acme_raw.calibration_insights_labels"
COLUMNS = {
    "item_ref": "string",
    "instrument_id": "string",
    "run_date": "date",
    "n_simulations": "integer",
    "mean_error": "double",
    "std_error": "double",
    "p95_error": "double",
    "bias": "double",
    "gain_error_pct": "double",
    "ambient_temp_c": "double",
    "humidity_pct": "double",
}
INSTRUMENTS = "acme_raw.instruments"
DIMENSIONS = {
    INSTRUMENTS: {
        "instrument_id": "string",
        "instrument_type": "string",
        "lab": "string",
        "days_since_service": "integer",
    }
}

ACTIONS = [
    "No action required.",
    "Recalibrate the offset.",
    "Recalibrate the gain.",
    "Replace the probe.",
    "Repeat the run in a controlled environment.",
    "Send to the vendor for service.",
]
NO_ACTION, OFFSET, GAIN, PROBE, ENVIRONMENT, VENDOR = range(6)
PRIOR = [0.5, 0.14, 0.12, 0.08, 0.09, 0.07]  # for label noise; close to the rule outcome mix
INSTRUMENT_TYPES = ["multimeter", "oscilloscope", "power_analyzer", "thermocouple_logger"]
LABS = ["Austin Metrology Lab", "Penang Calibration Lab", "Guadalajara QA Lab"]
SIMULATIONS = np.array([1_000, 5_000, 10_000, 50_000, 100_000])


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    n = g.dimension_size(rows)
    return {
        INSTRUMENTS: {
            "instrument_id": g.dimension_ids("INS", n),
            "instrument_type": np.array(INSTRUMENT_TYPES)[g.draw(rng, [0.35, 0.25, 0.2, 0.2], n)],
            "lab": np.array(LABS)[g.draw(rng, [0.45, 0.35, 0.2], n)],
            "days_since_service": np.clip(rng.gamma(2.0, 160.0, n), 0, 5000).astype(np.int64),
        }
    }


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    instruments = ctx.dims[INSTRUMENTS]
    service_days = instruments["days_since_service"]
    weights = 1 + service_days / 250 if drifted else np.ones(service_days.shape[0])
    unit = rng.choice(service_days.shape[0], size=n, p=weights / weights.sum())
    days = service_days[unit]

    uncontrolled = rng.random(n) < (0.2 if drifted else 0.08)
    hot = rng.random(n) < 0.6
    ambient = np.where(
        uncontrolled, np.where(hot, rng.normal(31, 3, n), rng.normal(13, 3, n)), rng.normal(22.5, 1.3, n)
    )
    ambient = ambient + 3.0 * drifted
    humidity = np.where(uncontrolled & (rng.random(n) < 0.5), rng.normal(72, 8, n), rng.normal(42, 7, n))

    sign = rng.choice([-1.0, 1.0], n)
    bias = np.where(rng.random(n) < 0.14, sign * rng.normal(0.32, 0.08, n), rng.normal(0, 0.05, n))
    gain = np.where(rng.random(n) < 0.12, sign * rng.normal(2.2, 0.5, n), rng.normal(0, 0.35, n))
    worn_probe = rng.random(n) < 0.08
    std = np.where(worn_probe, rng.lognormal(np.log(0.45), 0.2, n), rng.lognormal(np.log(0.1), 0.25, n))
    std = std * (1 + (days / 450) ** 2)  # instruments drift apart the longer they go without service
    simulations = SIMULATIONS[rng.integers(0, SIMULATIONS.shape[0], n)]
    mean_error = bias + rng.normal(0, 1, n) * std / np.sqrt(simulations)
    p95 = np.abs(mean_error) + 1.645 * std + 0.05 * np.abs(gain)

    # Engineers apply the rules with some slack: each run is judged against slightly different thresholds.
    slack = rng.normal(1, 0.08, (5, n))
    action = np.select(
        [
            (ambient < 18 / slack[0]) | (ambient > 28 * slack[0]) | (humidity > 65 * slack[0]),
            (days > 600 * slack[1]) & (p95 > 0.55 * slack[1]),
            std > 0.3 * slack[2],
            np.abs(gain) > 1.2 * slack[3],
            np.abs(bias) > 0.2 * slack[4],
        ],
        [ENVIRONMENT, VENDOR, PROBE, GAIN, OFFSET],
        default=NO_ACTION,
    )
    label, noisy = g.resample(rng, action, PRIOR, ctx.label_noise)
    run_date = ctx.dates()
    columns = {
        "item_ref": ctx.refs,
        "instrument_id": instruments["instrument_id"][unit],
        "run_date": run_date,
        "n_simulations": simulations,
        "mean_error": g.with_nulls(rng, mean_error.round(5)),
        "std_error": np.clip(std, 0, 100).round(5),
        "p95_error": np.clip(p95, 0, 100).round(5),
        "bias": bias.round(5),
        "gain_error_pct": np.clip(gain, -50, 50).round(4),
        "ambient_temp_c": np.clip(ambient, -10, 60).round(2),
        "humidity_pct": g.with_nulls(rng, np.clip(humidity, 0, 100).round(1)),
    }
    event_us = run_date.astype(np.int64) * g.US_PER_DAY + 12 * g.US_PER_HOUR
    labels = g.label_batch(
        ctx,
        g.pick([json.dumps(a) for a in ACTIONS], label),
        event_us,
        g.enum_conflicts(ACTIONS, label),
        noisy=noisy,
    )
    return g.Block(columns, labels)
