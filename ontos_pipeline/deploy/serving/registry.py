"""Which model each endpoint serves, and the hot swap when the `champion` alias moves.

A background thread polls the aliases. A new version is loaded *before* it replaces the old one, and the swap is
a single reference assignment: a request takes the `Served` object once at its start and answers with it, so
in-flight requests finish on the version they started with and no request ever waits for a load.

An A/B test (`serving.ab_test.challenger_percent` > 0 and the `ab_challenger` alias set to another version than the
champion) loads that version too, the same way, and `acquire` routes a request to it when the stable hash of the
request's routing key falls in the challenger's share (`ab_test.routes_to_challenger`); a promoted arm becomes the
champion without a second load.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ontos_pipeline.deploy.ab_test import routes_to_challenger
from ontos_pipeline.platform.model_store import AB_CHALLENGER, CHAMPION, ModelStore
from ontos_pipeline.specs import ColumnSpec, UseCaseSpec
from ontos_pipeline.train.trainer.models import ResponseModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One endpoint's model at one version (immutable: swapped as a whole)."""

    endpoint: str
    spec: UseCaseSpec
    version: str
    model: ResponseModel
    loaded_at: datetime
    columns: Mapping[str, ColumnSpec] = field(default_factory=dict)

    @property
    def required(self) -> list[str]:
        return self.model.input_columns


@dataclass(frozen=True)
class Split:
    """The A/B arm of an endpoint: the challenger's model and its share of the requests (percent)."""

    challenger: Served
    percent: int


class EndpointRegistry:
    """Endpoints by name; each serves the version its use case's `champion` alias points to."""

    def __init__(
        self, store: ModelStore, specs: Mapping[str, UseCaseSpec], loader: Callable[[str], ResponseModel] | None = None
    ):
        self.store = store
        self.specs = {s.serving.endpoint_name: s for s in specs.values()}
        self._load = loader or store.load
        self._served: dict[str, Served] = {}
        self._splits: dict[str, Split] = {}
        self._lock = threading.Lock()  # orders (request time, version) pairs: see `acquire`
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps: list[tuple[str, str | None, str, datetime]] = []  # (endpoint, from, to, when)

    def names(self) -> list[str]:
        return sorted(self.specs)

    def acquire(self, endpoint: str, key: str | None = None) -> tuple[Served | None, datetime]:
        """The model that answers a request and the request time, taken together: later times never get older
        versions, so the inference log orders versions the way they were served. During an A/B test the routing
        `key` picks the arm (the same key, the same arm); without a key the champion answers."""
        with self._lock:
            served, split = self._served.get(endpoint), self._splits.get(endpoint)
            if (
                served is not None
                and split is not None
                and key is not None
                and routes_to_challenger(key, split.percent)
            ):
                served = split.challenger
            return served, datetime.now(UTC)

    def get(self, endpoint: str) -> Served | None:
        return self._served.get(endpoint)

    def split(self, endpoint: str) -> Split | None:
        return self._splits.get(endpoint)

    def refresh(self) -> list[str]:
        """Load the champion (and the A/B arm) of every endpoint whose aliases moved; returns the endpoints that
        changed."""
        changed = []
        for endpoint, spec in self.specs.items():
            current, split = self._served.get(endpoint), self._splits.get(endpoint)
            what = CHAMPION
            try:
                champion = self.store.version(spec.name, CHAMPION)
                if champion is None:
                    continue
                percent = spec.serving.ab_test.challenger_percent
                arm = self.store.version(spec.name, AB_CHALLENGER) if percent else None
                arm_version = str(arm.version) if arm is not None else None
                if arm_version == str(champion.version):
                    arm_version = None
                loaded = {s.version: s for s in (current, split and split.challenger) if s is not None}
                served = loaded.get(str(champion.version)) or self._served_version(endpoint, spec, champion.version)
                what = AB_CHALLENGER
                new_split = None
                if arm_version is not None:
                    arm_served = loaded.get(arm_version) or self._served_version(endpoint, spec, arm_version)
                    new_split = Split(arm_served, percent)
            except Exception as exc:  # keep serving what we have; report and retry on the next poll
                log.error("endpoint %s: cannot load the %s of %s: %s", endpoint, what, spec.name, exc)
                continue
            same_split = (split and (split.challenger.version, split.percent)) == (
                new_split and (new_split.challenger.version, new_split.percent)
            )
            if served is current and same_split:
                continue
            with self._lock:
                self._served[endpoint] = served
                if new_split is None:
                    self._splits.pop(endpoint, None)
                else:
                    self._splits[endpoint] = new_split
                if served is not current:
                    self.swaps.append((endpoint, current and current.version, served.version, served.loaded_at))
            if served is not current:
                log.warning("endpoint %s now serves %s version %s", endpoint, spec.name, served.version)
            if not same_split:
                log.warning(
                    "endpoint %s: %s",
                    endpoint,
                    f"A/B test: version {new_split.challenger.version} answers {new_split.percent}% of requests"
                    if new_split
                    else "no A/B test: the champion answers every request",
                )
            changed.append(endpoint)
        return changed

    def _served_version(self, endpoint: str, spec: UseCaseSpec, version: object) -> Served:
        model = self._load(self.store.version_uri(spec.name, str(version)))
        return Served(endpoint, spec, str(version), model, datetime.now(UTC), {c.name: c for c in spec.sheet.columns})

    def start(self, poll_seconds: float) -> None:
        def watch() -> None:
            while not self._stop.wait(poll_seconds):
                self.refresh()

        self._thread = threading.Thread(target=watch, name="ontos-alias-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def describe(self, base_url: str = "") -> list[dict]:
        out = []
        for endpoint in self.names():
            served, spec, split = self._served.get(endpoint), self.specs[endpoint], self._splits.get(endpoint)
            out.append(
                {
                    "name": endpoint,
                    "use_case": spec.name,
                    "state": "READY" if served else "NOT_READY",
                    "model": self.store.model_name(spec.name),
                    "served_version": served and served.version,
                    "challenger_version": split.challenger.version if split else None,
                    "challenger_percent": split.percent if split else 0,
                    "loaded_at": served and served.loaded_at.isoformat(),
                    "inputs": served.required if served else None,
                    "invocations": f"{base_url}/serving-endpoints/{endpoint}/invocations",
                }
            )
        return out
