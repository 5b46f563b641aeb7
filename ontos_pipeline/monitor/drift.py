"""Drift statistics over binned counts (the counting happens in Spark; only the bins reach this module).

- numeric columns: PSI over the reference deciles plus a bin below the reference minimum and one above its maximum
  (values out of the training range are a shift of their own: a constant training column, such as one image size,
  has all its rows in one decile), and a two-sample Kolmogorov-Smirnov test over the reference's 20-quantile bins
  (the binned statistic is a lower bound of the exact one: the test errs on the quiet side);
- categorical columns: PSI over the categories and a chi-square test of homogeneity.

A column drifts when PSI reaches the threshold (0.2 by default, "significant shift") *and* the test rejects at
the level (0.05): the test alone flags tiny shifts on large samples, PSI alone flags noise on small ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy import stats

EPSILON = 1e-4  # share given to an empty bin so PSI stays finite


@dataclass(frozen=True)
class Drift:
    column: str
    kind: str  # numeric | categorical
    psi: float
    test: str  # ks | chi2
    statistic: float
    p_value: float
    reference_rows: int
    current_rows: int
    drifted: bool

    def record(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two count vectors over the same bins."""
    r_total, c_total = sum(reference), sum(current)
    if not r_total or not c_total:
        return 0.0
    value = 0.0
    for r, c in zip(reference, current, strict=True):
        rp, cp = max(r / r_total, EPSILON), max(c / c_total, EPSILON)
        value += (cp - rp) * math.log(cp / rp)
    return value


def numeric_drift(
    column: str, reference: Sequence[int], current: Sequence[int], psi_threshold: float, level: float
) -> Drift:
    """`reference`/`current`: counts in the reference's 20-quantile bins (plus under/overflow bins at the ends)."""
    n, m = sum(reference), sum(current)
    deciles_r, deciles_c = _deciles(reference), _deciles(current)
    value = psi(deciles_r, deciles_c)
    d = 0.0
    cr = cc = 0
    for r, c in zip(reference, current, strict=True):
        cr, cc = cr + r, cc + c
        d = max(d, abs(cr / n - cc / m)) if n and m else 0.0
    p = float(stats.kstwobign.sf(d * math.sqrt(n * m / (n + m)))) if n and m else 1.0
    return Drift(column, "numeric", value, "ks", d, p, n, m, value >= psi_threshold and p < level)


def categorical_drift(
    column: str, reference: Mapping[str, int], current: Mapping[str, int], psi_threshold: float, level: float
) -> Drift:
    keys = sorted(set(reference) | set(current), key=str)
    r, c = [reference.get(k, 0) for k in keys], [current.get(k, 0) for k in keys]
    n, m = sum(r), sum(c)
    value = psi(r, c)
    used = [i for i in range(len(keys)) if r[i] + c[i] > 0]
    if n and m and len(used) > 1:
        statistic, p, _, _ = stats.chi2_contingency([[r[i] for i in used], [c[i] for i in used]])
        statistic, p = float(statistic), float(p)
    else:
        statistic, p = 0.0, 1.0
    return Drift(column, "categorical", value, "chi2", statistic, p, n, m, value >= psi_threshold and p < level)


def _deciles(counts: Sequence[int]) -> list[int]:
    """22 bins (underflow, 20 quantile bins, overflow) -> underflow, 10 deciles, overflow."""
    inner = list(counts[1:-1])
    return [counts[0], *[inner[i] + inner[i + 1] for i in range(0, len(inner), 2)], counts[-1]]
