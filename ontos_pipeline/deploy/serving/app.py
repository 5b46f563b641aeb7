"""The local serving process: one FastAPI app on 127.0.0.1 for every use case's endpoint.

Routes follow Databricks Model Serving: `POST /serving-endpoints/{name}/invocations` answers
`{"predictions": [...]}` with the answering model version in the `X-Model-Version` header (during an A/B test, the
arm's: see `registry`) and the request id in
`X-Request-Id` (always the server's; an `X-Request-Id` the client sends is logged as `client_request_id` and echoed
as `X-Client-Request-Id`). Every route but `/health` (and the OpenAPI document, `/docs`) needs `Authorization:
Bearer <token>` with the route's scope (`auth`); refused calls get 401/403, are counted in `/health` and are not
logged as requests. Every authenticated request, failed ones included, is written to the inference log, with its
caller, before it is answered.
An endpoint's `serving.guardrails` (`guardrails`) act on what the model sees and what the caller gets: PII redacted
or refused, invalid answers withheld, low-confidence answers turned into abstains queued for review, a rate limit per
caller (429); each decision is logged in the row's `guardrails` column and counted in `/health`.
Inline images of answered requests are kept under the lakehouse files folder (`serving_images/<use case>`) and
logged by their path relative to that folder (see `inline_images`); an image path in a request may be relative to it
too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated

import pandas as pd
from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from ontos_pipeline.deploy.serving.auth import Authenticator, AuthError, Caller
from ontos_pipeline.deploy.serving.guardrails import (
    EndpointGuardrails,
    GuardrailRefused,
    RateLimited,
    RateLimiter,
    ReviewQueue,
)
from ontos_pipeline.deploy.serving.inline_images import ImageStore, loggable, redacted
from ontos_pipeline.deploy.serving.logbook import InferenceLog
from ontos_pipeline.deploy.serving.redaction import NO_REDACTION, LogRedaction
from ontos_pipeline.deploy.serving.registry import EndpointRegistry
from ontos_pipeline.label.feedback import FeedbackError, logged_requests, parse_feedback, record_feedback
from ontos_pipeline.platform.images import with_image_files
from ontos_pipeline.platform.invocations import BadRequest, parse_json, records_of, validate_records
from ontos_pipeline.platform.lakehouse import Lakehouse

DEFAULT_MAX_BODY = 5_000_000
IMAGES_FOLDER = "serving_images"  # inline request images, under the lakehouse files folder
MAX_FEEDBACK_ITEMS = 1000  # feedback objects in one POST /feedback
RECENT_REQUESTS = 100_000  # request id -> (endpoint, item_ref) for feedback on answers not flushed yet


_RECORDS = {"type": "array", "items": {"type": "object"}, "description": "one object of column -> value per record"}
INVOCATION_BODY = {  # the Databricks Model Serving shapes (OpenAPI document; the parser checks them itself)
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "exactly one of the shapes",
                "properties": {
                    "dataframe_records": _RECORDS,
                    "dataframe_split": {
                        "type": "object",
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array"}},
                        },
                    },
                    "inputs": {"oneOf": [_RECORDS, {"type": "object"}]},
                },
            }
        }
    },
}
_FEEDBACK = {
    "type": "object",
    "properties": {
        **{k: {"type": "string"} for k in ("endpoint", "use_case", "request_id", "item_ref", "comment", "author")},
        "rating": {"enum": ["up", "down"]},
        "correction": {"description": "the right answer, valid against the endpoint's response schema"},
    },
}
FEEDBACK_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [_FEEDBACK, {"type": "array", "items": _FEEDBACK}]}}},
}

BEARER = HTTPBearer(auto_error=False, description="a token made with `ontos token create NAME`")


def _caller(request: Request, scope: str | None) -> Caller:
    """On the event loop (a dict lookup and one stat of the token file): no thread hop per request."""
    return request.app.state.authenticator.caller(request.headers.get("authorization"), scope)


async def any_caller(request: Request, _: Annotated[object, Security(BEARER)]) -> Caller:
    """The caller of the request's token (any scope); AuthError (401) without a valid one."""
    return _caller(request, None)


async def invoke_caller(request: Request, _: Annotated[object, Security(BEARER)]) -> Caller:
    return _caller(request, "invoke")


async def feedback_caller(request: Request, _: Annotated[object, Security(BEARER)]) -> Caller:
    return _caller(request, "feedback")


Invoker = Annotated[Caller, Depends(invoke_caller)]
FeedbackGiver = Annotated[Caller, Depends(feedback_caller)]


def create_app(
    registry: EndpointRegistry,
    inference_log: InferenceLog,
    lakehouse: Lakehouse,
    authenticator: Authenticator,
    poll_seconds: float = 2.0,
    log_key: str | None = None,
    image_folders: Sequence[str] = (),
) -> FastAPI:
    recent: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
    stores: dict[str, ImageStore] = {}
    files_root = lakehouse.volume_path()  # relative image cells (requests, kept inline images) live under it
    readable = [files_root, *image_folders]  # the only folders a request's image path may name
    redactions = {name: LogRedaction.of(spec, log_key) for name, spec in registry.specs.items()}  # fails early
    guards = {name: EndpointGuardrails(spec) for name, spec in registry.specs.items()}
    limiter = RateLimiter()
    decided: Counter = Counter()  # guardrail decisions by rule, stage and action (for /health)
    review = ReviewQueue(lakehouse, inference_log.root.parent / "review_spool", inference_log.flush_seconds)

    def image_store(use_case: str) -> ImageStore:
        if use_case not in stores:
            stores[use_case] = ImageStore(lakehouse.volume_path(IMAGES_FOLDER, use_case), files_root)
        return stores[use_case]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from anyio.to_thread import current_default_thread_limiter

        from ontos_pipeline.platform.threads import serving_threads

        current_default_thread_limiter().total_tokens = serving_threads()  # anyio's default is 40 threads
        inference_log.open()
        review.open()
        registry.refresh()
        registry.start(poll_seconds)
        try:
            yield
        finally:
            registry.stop()
            review.close()
            inference_log.close()

    app = FastAPI(title="Ontos Pipeline serving", lifespan=lifespan)
    app.state.authenticator = authenticator

    def error(http_status: int, code: str, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error_code": code, "message": message, **extra}, status_code=http_status)

    @app.exception_handler(AuthError)
    async def refused(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error_code": exc.code, "message": exc.message}, exc.status, headers=headers)

    @app.post("/serving-endpoints/{name}/invocations", openapi_extra={"requestBody": INVOCATION_BODY})
    async def invocations(name: str, request: Request, caller: Invoker) -> JSONResponse:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex  # ours, always: a client's id may repeat (Databricks keeps it apart too)
        client_id = _client_request_id(request.headers.get("x-request-id"))
        # an A/B test routes by a stable hash: the caller's own request id (a retry lands on the same arm), else ours
        served, request_time = registry.acquire(name, f"{caller.name}:{client_id}" if client_id else request_id)
        headers = {"X-Request-Id": request_id}
        if client_id:
            headers["X-Client-Request-Id"] = client_id
        row = {
            "request_id": request_id,
            "client_request_id": client_id,
            "request_time": request_time,
            "endpoint_name": name,
            "model_version": served and served.version,
            "caller": caller.name,
        }
        if served is not None:
            headers["X-Model-Version"] = served.version
        spec = registry.specs.get(name)
        redaction = redactions.get(name) or NO_REDACTION
        guard = guards.get(name)
        decisions: list[dict] = []  # guardrail decisions (logged in the `guardrails` column)
        to_review: list[dict] = []
        try:
            if spec is None:
                raise BadRequest(
                    404,
                    f"no endpoint named {name!r}; endpoints: {', '.join(registry.names())}",
                    "RESOURCE_DOES_NOT_EXIST",
                )
            limit = spec.serving.guardrails.rate_limit
            wait = None if limit is None else limiter.take(name, caller.name, limit)
            if wait is not None:
                decisions.append({"rule": "rate_limit", "action": "refuse", "retry_after_s": round(wait, 3)})
                raise RateLimited(
                    f"caller {caller.name!r} is over the rate limit of endpoint {name!r} "
                    f"({limit.requests_per_minute} requests per minute, bursts of {limit.burst}); retry later",
                    wait,
                )
            body = await _body(request, spec.serving.max_body_bytes)
            images = [c.name for c in spec.sheet.columns_of("image")]
            row["inputs"] = body.decode("utf-8", "replace")
            if images or redaction.active:  # refused requests are logged too: without inline images or PHI
                row["inputs"] = redaction.body(await run_in_threadpool(loggable, row["inputs"], images))
            if served is None:
                raise BadRequest(
                    503,
                    f"endpoint {name!r} has no champion model yet; materialize serving_endpoint for {spec.name}",
                    "NOT_READY",
                )
            records = records_of(parse_json(body), spec.serving.max_rows_per_request)
            if guard is not None and guard.active:  # what the model sees: PII masked or refused
                records = await run_in_threadpool(guard.inputs, records, decisions)
            row["inputs"] = json.dumps(redaction.records(redacted(records, images)), ensure_ascii=False, default=str)
            # validation decodes every image: off the event loop
            typed = await run_in_threadpool(
                validate_records, records, served.required, served.columns, files_root, readable
            )
            checked = [c for c in images if c in served.required]  # validated: readable images
            if checked:  # inline images -> kept files: the model and the log see the same path
                store, paths = image_store(spec.name), {}
                typed = await run_in_threadpool(store.keep, typed, checked, paths)
                logged = redacted(store.keep(records, checked, paths), images)
                row["inputs"] = json.dumps(redaction.records(logged), ensure_ascii=False, default=str)
            items = with_image_files(pd.DataFrame(typed), checked, files_root)  # prompts keep the cells as logged
            answers, prompts = await run_in_threadpool(served.model.answer, items)
            if guard is not None and guard.active:  # what the caller gets: abstains, PII, the response schema
                answers, to_review = await run_in_threadpool(guard.outputs, answers, records, request_id, decisions)
            payload, status, message = {"predictions": answers}, 200, None
            row["rendered_prompt"] = "\n---\n".join(redaction.prompt(p, records) for p in prompts)
            refs = {r.get("item_ref") for r in records}
            recent[request_id] = (name, refs.pop() if len(refs) == 1 else None)
            while len(recent) > RECENT_REQUESTS:
                recent.popitem(last=False)
        except GuardrailRefused as exc:
            payload = {"error_code": exc.code, "message": exc.message, "guardrail": exc.detail}
            status, message = exc.status, exc.message
        except RateLimited as exc:
            payload, status, message = {"error_code": exc.code, "message": exc.message}, exc.status, exc.message
            headers["Retry-After"] = exc.header
        except BadRequest as exc:
            payload, status, message = {"error_code": exc.code, "message": exc.message}, exc.status, exc.message
        except Exception as exc:  # a fault of ours, not of the input: still logged, still answered
            payload, status = {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}, 500
            message = payload["message"]
        row.update(
            response=json.dumps(redaction.masked(payload.get("predictions")), default=str) if status == 200 else None,
            status_code=status,
            error=redaction.text(message),
            latency_ms=(time.perf_counter() - started) * 1000,
            guardrails=json.dumps(decisions, sort_keys=True) if decisions else None,
        )
        inference_log.write(row)
        if status == 200 and to_review:  # after the log: the review item names a logged request
            review.put(to_review)
        decided.update(".".join(filter(None, (d["rule"], d.get("stage"), d["action"]))) for d in decisions)
        return JSONResponse(payload, status_code=status, headers=headers)

    @app.get("/health")
    def health() -> dict:
        endpoints = registry.describe()
        return {
            "status": "ok",
            "endpoints": {e["name"]: e["state"] for e in endpoints},
            "model_loads": len(registry.swaps),
            "inference_log": {"pending": inference_log.pending, "logged": inference_log.logged},
            "refused": {str(status): n for status, n in sorted(authenticator.refused.items())},
            "guardrails": {
                "rate_limited": dict(sorted(limiter.limited.items())),
                "decisions": dict(sorted(decided.items())),
                "review_queue": {"pending": review.pending, "items": review.items, "tasks": review.tasks},
            },
        }

    @app.get("/serving-endpoints", dependencies=[Depends(any_caller)])
    def endpoints(request: Request) -> dict:
        return {"endpoints": registry.describe(str(request.base_url).rstrip("/"))}

    @app.get("/serving-endpoints/{name}", dependencies=[Depends(any_caller)])
    def endpoint(name: str, request: Request) -> JSONResponse:
        found = [e for e in registry.describe(str(request.base_url).rstrip("/")) if e["name"] == name]
        if not found:
            return error(404, "RESOURCE_DOES_NOT_EXIST", f"no endpoint named {name!r}")
        return JSONResponse(found[0])

    @app.post("/feedback", openapi_extra={"requestBody": FEEDBACK_BODY})
    async def feedback(request: Request, caller: FeedbackGiver) -> JSONResponse:
        """One feedback object, or a list of them (one commit per endpoint)."""
        try:
            body = parse_json(await _body(request, DEFAULT_MAX_BODY))
            items = body if isinstance(body, list) else [body]
            if not items:
                raise FeedbackError("the list of feedback is empty")
            if len(items) > MAX_FEEDBACK_ITEMS:
                raise BadRequest(
                    413,
                    f"{len(items)} feedback objects in one request; send at most {MAX_FEEDBACK_ITEMS} at a time",
                    "REQUEST_LIMIT_EXCEEDED",
                )
            ids = {b.get("request_id") for b in items if isinstance(b, Mapping)}
            unknown = {i for i in ids if isinstance(i, str) and i not in recent}
            logged = await run_in_threadpool(logged_requests, lakehouse, unknown)  # one read, off the event loop
            resolved = [resolve(b, logged) for b in items]
        except BadRequest as exc:
            return error(exc.status, exc.code, exc.message)
        except FeedbackError as exc:
            return error(400, "INVALID_PARAMETER_VALUE", str(exc))
        rows = []
        for spec in {id(s): s for s, _, _ in resolved}.values():
            mine = [(item, problem) for s, item, problem in resolved if s is spec]
            rows += await run_in_threadpool(
                record_feedback, lakehouse, spec, [i for i, _ in mine], [p for _, p in mine], caller.name
            )
        results = [{k: row[k] for k in ("feedback_id", "seq", "status", "reason", "item_ref")} for row in rows]
        if not isinstance(body, list):
            if rows[0]["status"] == "rejected":
                return error(422, "INVALID_PARAMETER_VALUE", rows[0]["reason"], **results[0])
            return JSONResponse(results[0], status_code=201)
        return JSONResponse({"feedback": results}, status_code=201)

    def resolve(body: object, logged: Mapping[str, tuple[str, str | None]]):
        """(use case spec, parsed feedback, problem) for one feedback object (`logged`: the requests it may name
        that are in the inference log); raises on unusable ones."""
        if not isinstance(body, Mapping):
            raise FeedbackError("feedback must be a JSON object (or a list of them)")
        for key in ("endpoint", "use_case"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise FeedbackError(f"field {key!r} must be a string (an endpoint or use case name)")
        name = body.get("endpoint") or None  # "" names nothing
        if name is None and body.get("use_case"):
            name = next((e for e, s in registry.specs.items() if s.name == body["use_case"]), body["use_case"])
        rid = body.get("request_id")
        known = (recent.get(rid) or logged.get(rid)) if isinstance(rid, str) else None
        if name is None and known is None:
            raise BadRequest(
                404 if rid else 400,
                f"unknown request_id {rid!r}; give 'endpoint' too"
                if rid
                else "give the 'endpoint' (or 'use_case') the feedback is about, or a request_id",
            )
        spec = registry.specs.get(name or known[0])
        if spec is None:
            raise BadRequest(
                404,
                f"no endpoint named {name or known[0]!r}; endpoints: {', '.join(registry.names())}",
                "RESOURCE_DOES_NOT_EXIST",
            )
        item = parse_feedback({k: v for k, v in body.items() if k not in ("endpoint", "use_case")}, spec.name)
        if item.item_ref is None and known is not None and known[1]:
            item = replace(item, item_ref=known[1])
        return spec, item, f"unknown request_id {rid!r}" if rid and known is None else None

    return app


def _client_request_id(value: str | None) -> str | None:
    """A client's own request id (the X-Request-Id it sent), kept when it is 1-128 printable ASCII characters."""
    if value and len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (without reading past the limit)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body has {int(declared)} bytes; the limit is {limit}", "REQUEST_LIMIT_EXCEEDED")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body exceeds the limit of {limit} bytes", "REQUEST_LIMIT_EXCEEDED")
        chunks.append(chunk)
    return b"".join(chunks)
