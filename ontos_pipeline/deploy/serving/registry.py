"""Which model each endpoint serves, and the hot swap when the `champion` alias moves.

A background thread polls the aliases. A new version is loaded *before* it replaces the old one, and the swap is
a single reference assignment: a request takes the `Served` object once at its start and answers with it, so
in-flight requests finish on the version they started with and no request ever waits for a load.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ontos_pipeline.platform.model_store import CHAMPION, ModelStore
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


class EndpointRegistry:
    """Endpoints by name; each serves the version its use case's `champion` alias points to."""

    def __init__(
        self, store: ModelStore, specs: Mapping[str, UseCaseSpec], loader: Callable[[str], ResponseModel] | None = None
    ):
        self.store = store
        self.specs = {s.serving.endpoint_name: s for s in specs.values()}
        self._load = loader or store.load
        self._served: dict[str, Served] = {}
        self._lock = threading.Lock()  # orders (request time, version) pairs: see `acquire`
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps: list[tuple[str, str | None, str, datetime]] = []  # (endpoint, from, to, when)

    def names(self) -> list[str]:
        return sorted(self.specs)

    def acquire(self, endpoint: str) -> tuple[Served | None, datetime]:
        """The endpoint's current model and the request time, taken together: later times never get older
        versions, so the inference log orders versions the way they were served."""
        with self._lock:
            return self._served.get(endpoint), datetime.now(UTC)

    def get(self, endpoint: str) -> Served | None:
        return self._served.get(endpoint)

    def refresh(self) -> list[str]:
        """Load the champion of every endpoint whose alias moved; returns the endpoints that changed."""
        changed = []
        for endpoint, spec in self.specs.items():
            try:
                champion = self.store.version(spec.name, CHAMPION)
                current = self._served.get(endpoint)
                if champion is None or (current is not None and current.version == str(champion.version)):
                    continue
                model = self._load(self.store.version_uri(spec.name, champion.version))
                served = Served(
                    endpoint,
                    spec,
                    str(champion.version),
                    model,
                    datetime.now(UTC),
                    {c.name: c for c in spec.sheet.columns},
                )
            except Exception as exc:  # keep serving what we have; report and retry on the next poll
                log.error("endpoint %s: cannot load the %s of %s: %s", endpoint, CHAMPION, spec.name, exc)
                continue
            with self._lock:
                self._served[endpoint] = served
                self.swaps.append((endpoint, current and current.version, served.version, served.loaded_at))
            log.warning("endpoint %s now serves %s version %s", endpoint, spec.name, served.version)
            changed.append(endpoint)
        return changed

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
            served, spec = self._served.get(endpoint), self.specs[endpoint]
            out.append(
                {
                    "name": endpoint,
                    "use_case": spec.name,
                    "state": "READY" if served else "NOT_READY",
                    "model": self.store.model_name(spec.name),
                    "served_version": served and served.version,
                    "loaded_at": served and served.loaded_at.isoformat(),
                    "inputs": served.required if served else None,
                    "invocations": f"{base_url}/serving-endpoints/{endpoint}/invocations",
                }
            )
        return out
