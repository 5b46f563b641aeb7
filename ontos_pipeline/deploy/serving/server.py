"""Build and run the serving process for a settings object (used by `ontos serve`, the demo and the tests)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ontos_pipeline.deploy.serving.app import create_app
from ontos_pipeline.deploy.serving.auth import ENV_TOKEN, Authenticator, TokenStore, is_loopback
from ontos_pipeline.deploy.serving.logbook import InferenceLog
from ontos_pipeline.deploy.serving.redaction import LOG_KEY
from ontos_pipeline.deploy.serving.registry import EndpointRegistry
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.model_store import local_store
from ontos_pipeline.settings import Settings
from ontos_pipeline.specs import load_use_cases


@dataclass(frozen=True)
class ServingOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    poll_seconds: float = 2.0  # how often the champion aliases are checked (hot swap delay)
    flush_seconds: float = 1.0  # how often the inference log is committed to its table
    flush_rows: int = 500


def build_app(settings: Settings, options: ServingOptions) -> tuple[FastAPI, EndpointRegistry, InferenceLog]:
    lakehouse = LocalLakehouse(
        settings.tables_dir, settings.catalog, settings.schema, files_root=settings.home / "files"
    )
    store = local_store(settings.home, settings.catalog, settings.schema)
    registry = EndpointRegistry(store, load_use_cases(settings.use_cases_dir))
    inference_log = InferenceLog(
        lakehouse, settings.home / "serving" / "spool", options.flush_seconds, options.flush_rows
    )
    authenticator = Authenticator(TokenStore(settings.home), settings.serve_token)
    if not is_loopback(options.host) and not authenticator.configured():
        raise ValueError(
            f"serving on {options.host} (beyond this machine) needs a token: set {ENV_TOKEN} or make one with "
            "`ontos token create NAME`; nothing was started"
        )
    app = create_app(
        registry,
        inference_log,
        lakehouse,
        authenticator,
        options.poll_seconds,
        os.environ.get(LOG_KEY) or None,
        [str(p) for p in settings.serve_image_roots],
    )
    return app, registry, inference_log


def make_server(settings: Settings, options: ServingOptions) -> uvicorn.Server:
    """The serving process: request threads sized to the machine, one native thread per model call (a request
    holds a handful of rows; parallel requests, not parallel math, use the cores)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # for the life of the process
    app = build_app(settings, options)[0]
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level="warning", access_log=False, timeout_graceful_shutdown=30
    )
    return uvicorn.Server(config)


class BackgroundServer:
    """The serving process in a thread of this process (tests); `stop()` shuts down gracefully."""

    def __init__(self, settings: Settings, options: ServingOptions):
        self.options = options
        self.server = make_server(settings, options)
        self.thread = threading.Thread(target=self.server.run, name="ontos-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the serving process did not start on {self.url}")
            self.thread.join(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
