"""A/B tests: the champion and a challenger (the `ab_challenger` alias) share an endpoint's traffic, and one
comparison of the two arms decides whether the challenger is promoted, dropped, or keeps its share.

Routing is a stable hash: a request goes to the challenger when `route_bucket(key) < challenger_percent`, so the
same key (the caller's own request id, or the server's) always lands on the same arm. Each arm is a model version;
the inference log's `model_version` says which arm answered, and feedback joins to it by request id.

The comparison (`compare`) is the one the monitoring report shows per window and the one a deploy concludes on
(over the whole test, `arm_stats`): the challenger-minus-champion difference of the thumbs-up share of rated answers
with Newcombe's hybrid score interval (two independent proportions; good at small counts and near 0 or 1, where the
Wald interval is not), and the same interval on the error rate. Verdicts:

- `too few requests`: an arm has fewer than `min_requests` requests;
- `worse`: the thumbs-up difference lies wholly below 0, or the error-rate difference wholly above 0;
- `better`: the thumbs-up difference lies wholly above 0 (errors not worse);
- `no difference yet`: otherwise (no rated answers in an arm included).

A deploy promotes on `better` or `no difference yet` (not worse, with enough requests in both arms), ends the test
on `worse`, and keeps the split on `too few requests`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from statistics import NormalDist

import numpy as np

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse

BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no difference yet", "too few requests"
VERDICTS = (BETTER, WORSE, NO_DIFFERENCE, TOO_FEW)
BUCKETS = 100


def route_bucket(key: str) -> int:
    """0..99 from a stable hash of `key` (the same in every process and run: not Python's salted `hash`)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % BUCKETS


def routes_to_challenger(key: str, challenger_percent: int) -> bool:
    return route_bucket(key) < challenger_percent


@dataclass(frozen=True)
class ArmStats:
    """One arm (model version) of a test over a period: requests, failures, latency and feedback counts."""

    version: str
    requests: int
    errors: int = 0
    latency_p95_ms: float | None = None
    rated: int = 0  # answers with a thumbs up or down
    thumbs_up: int = 0
    judged: int = 0  # answers with a rating or a correction (accuracy's denominator)
    correct: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def positive_rate(self) -> float | None:
        return self.thumbs_up / self.rated if self.rated else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.judged if self.judged else None

    def record(self) -> dict:
        return {
            **asdict(self),
            "error_rate": self.error_rate,
            "positive_rate": self.positive_rate,
            "accuracy": self.accuracy,
        }

    @classmethod
    def from_record(cls, row: Mapping[str, object]) -> ArmStats:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})  # type: ignore[arg-type]


def difference_interval(
    x_champion: int, n_champion: int, x_challenger: int, n_challenger: int, confidence: float = 0.95
) -> tuple[float | None, float | None, float | None]:
    """(difference, low, high) of challenger minus champion proportion: Newcombe's hybrid score interval (method
    10, from the two Wilson intervals). (None, None, None) when an arm has no observations."""
    if n_champion <= 0 or n_challenger <= 0:
        return None, None, None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p1, p2 = x_champion / n_champion, x_challenger / n_challenger
    l1, u1 = _wilson(x_champion, n_champion, z)
    l2, u2 = _wilson(x_challenger, n_challenger, z)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Comparison:
    """Challenger against champion: the arms, the thumbs-up difference with its interval, and the verdict."""

    champion: ArmStats
    challenger: ArmStats
    difference: float | None  # challenger - champion thumbs-up share of rated answers
    low: float | None
    high: float | None
    error_difference: float | None  # challenger - champion error rate
    error_low: float | None
    error_high: float | None
    confidence: float
    min_requests: int
    verdict: str

    @property
    def enough(self) -> bool:
        return self.verdict != TOO_FEW

    def summary(self) -> str:
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:+.1%}"

        def share(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1%}"

        c, h = self.champion, self.challenger
        interval = (
            f"{pct(self.difference)} [{pct(self.low)}, {pct(self.high)}] at {self.confidence:.0%}"
            if self.difference is not None
            else "n/a (an arm has no rated answers)"
        )
        return (
            f"A/B {self.verdict}: challenger v{h.version} thumbs-up {share(h.positive_rate)} of {h.rated} rated, "
            f"{h.requests} requests, errors {share(h.error_rate)}; champion v{c.version} thumbs-up "
            f"{share(c.positive_rate)} of {c.rated} rated, {c.requests} requests, errors {share(c.error_rate)}; "
            f"thumbs-up difference {interval}; min_requests {self.min_requests} per arm"
        )

    def record(self) -> dict:
        return {
            "champion": self.champion.record(),
            "challenger": self.challenger.record(),
            **{
                k: getattr(self, k)
                for k in (
                    "difference",
                    "low",
                    "high",
                    "error_difference",
                    "error_low",
                    "error_high",
                    "confidence",
                    "min_requests",
                    "verdict",
                )
            },
        }

    @classmethod
    def from_record(cls, row: Mapping[str, object]) -> Comparison:
        values = dict(row)
        values["champion"] = ArmStats.from_record(values["champion"])  # type: ignore[arg-type]
        values["challenger"] = ArmStats.from_record(values["challenger"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def compare(champion: ArmStats, challenger: ArmStats, min_requests: int, confidence: float = 0.95) -> Comparison:
    """The verdict on the challenger arm (module docstring): the one function monitoring and deploys use."""
    d, low, high = difference_interval(
        champion.thumbs_up, champion.rated, challenger.thumbs_up, challenger.rated, confidence
    )
    e, e_low, e_high = difference_interval(
        champion.errors, champion.requests, challenger.errors, challenger.requests, confidence
    )
    if min(champion.requests, challenger.requests) < min_requests:
        verdict = TOO_FEW
    elif (high is not None and high < 0) or (e_low is not None and e_low > 0):
        verdict = WORSE
    elif low is not None and low > 0:
        verdict = BETTER
    else:
        verdict = NO_DIFFERENCE
    return Comparison(champion, challenger, d, low, high, e, e_low, e_high, confidence, min_requests, verdict)


def arm_stats(
    lakehouse: Lakehouse, use_case: str, endpoint: str, versions: Iterable[str], since: datetime | None = None
) -> dict[str, ArmStats]:
    """Per model version: the endpoint's logged requests since `since` and the latest accepted feedback on them
    (thumbs up or down; a correction counts as judged, right when it names the served answer). Read with the
    lakehouse's record reads (no Spark): a deploy or the CLI concludes a test on it."""
    wanted = [str(v) for v in versions]
    rows = lakehouse.records(
        tables.INFERENCE_LOG,
        {"endpoint_name": endpoint, "model_version": wanted},
        columns=["request_id", "request_time", "model_version", "status_code", "latency_ms", "response"],
    )
    if since is not None:
        rows = [r for r in rows if r["request_time"] is not None and r["request_time"] >= since]
    answered = {r["request_id"]: r for r in rows if r["status_code"] == 200}
    latest: dict[tuple, dict] = {}
    if answered:
        for f in lakehouse.records(
            tables.FEEDBACK,
            {"use_case": use_case, "request_id": sorted(answered)},
            columns=["request_id", "item_ref", "seq", "rating", "correction", "status"],
        ):
            if f["status"] == "rejected":
                continue
            key = (f["request_id"], f["item_ref"])
            if key not in latest or f["seq"] > latest[key]["seq"]:
                latest[key] = f
    out = {}
    for version in wanted:
        mine = [r for r in rows if r["model_version"] == version]
        latencies = [r["latency_ms"] for r in mine if r["latency_ms"] is not None]
        judged = [f for (rid, _), f in latest.items() if answered[rid]["model_version"] == version]
        rated = [f for f in judged if f["rating"] is not None]
        out[version] = ArmStats(
            version,
            len(mine),
            sum(r["status_code"] != 200 for r in mine),
            float(np.percentile(latencies, 95)) if latencies else None,
            len(rated),
            sum(f["rating"] == "up" for f in rated),
            len(judged),
            sum(_right(f, answered[f["request_id"]]) for f in judged),
        )
    return out


def _right(feedback: Mapping[str, object], request: Mapping[str, object]) -> bool:
    """A correction equal to the single answer of the request (JSON-compared), else the rating is up."""
    import json

    if feedback["correction"] is None:
        return feedback["rating"] == "up"
    try:
        answers = json.loads(str(request["response"]) or "[]")
        correction = json.loads(str(feedback["correction"]))
    except (json.JSONDecodeError, TypeError):
        return False
    return len(answers) == 1 and isinstance(answers[0], Mapping) and answers[0].get("response") == correction


TABLE_COLUMNS = ["arm", "version", "requests", "error_rate", "latency_p95_ms", "rated", "thumbs_up_share", "accuracy"]


def comparison_rows(comparison: Comparison) -> list[dict]:
    """The comparison as table rows (one per arm, then the difference): what the assets' metadata shows."""

    def share(value: float | None, signed: bool = False) -> str:
        return "n/a" if value is None else (f"{value:+.1%}" if signed else f"{value:.1%}")

    rows = []
    for name, arm in (("champion", comparison.champion), ("challenger", comparison.challenger)):
        rows.append(
            {
                "arm": name,
                "version": arm.version,
                "requests": arm.requests,
                "error_rate": share(arm.error_rate),
                "latency_p95_ms": "n/a" if arm.latency_p95_ms is None else f"{arm.latency_p95_ms:.1f}",
                "rated": arm.rated,
                "thumbs_up_share": share(arm.positive_rate),
                "accuracy": share(arm.accuracy),
            }
        )
    interval = (
        f"{share(comparison.difference, True)} [{share(comparison.low, True)}, {share(comparison.high, True)}]"
        if comparison.difference is not None
        else "n/a"
    )
    errors = share(comparison.error_difference, True)
    rows.append(
        {
            "arm": f"**{comparison.verdict}**",
            "version": f"challenger - champion ({comparison.confidence:.0%})",
            "requests": f"min {comparison.min_requests}",
            "error_rate": errors,
            "latency_p95_ms": "",
            "rated": "",
            "thumbs_up_share": interval,
            "accuracy": "",
        }
    )
    return rows
