"""Databricks Model Serving through databricks-sdk: one endpoint per use case, serving Unity Catalog model versions.

Pure functions (no Dagster). `sync_endpoint` makes an endpoint serve the champion (and optionally a challenger on a
share of the traffic) and log every request to an AI Gateway inference table in `<catalog>.<schema>`; it never waits
for the endpoint to become ready. Rolling back is `sync_endpoint` with the older version.

Given the use case's `serving.guardrails`, the endpoint's AI Gateway guardrails and rate limits become what it
declares (`gateway_config`): PII `redact` -> `MASK`, `refuse` -> `BLOCK` on input and output, and the rate limit ->
`{calls: requests_per_minute, renewal_period: minute, key: user}` (the gateway's limit has no burst). The response
schema and the confidence floor have no AI Gateway counterpart: the local server enforces them.

Errors from the workspace become `ServingSyncError`: the message names the endpoint, the operation and the server's
message, and says which permission to check. It never includes request headers or tokens.
"""

from __future__ import annotations

import re
from enum import Enum

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import DatabricksError, NotFound, PermissionDenied, ResourceConflict, Unauthenticated
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayGuardrailParameters,
    AiGatewayGuardrailPiiBehavior,
    AiGatewayGuardrails,
    AiGatewayInferenceTableConfig,
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    EndpointCoreConfigInput,
    Route,
    ServedEntityInput,
    ServingEndpointDetailed,
    TrafficConfig,
)

from ontos_pipeline.platform.tables import table_name_prefix
from ontos_pipeline.specs import GuardrailsSpec

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
MAX_NAME = 63  # Databricks endpoint and served entity names: letters, digits, '-' and '_'
_ENDPOINT = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_NAME}}}$")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_SECRETS = re.compile(
    r"(?i)(authorization\s*:\s*)\S.*|bearer\s+\S+|\bdapi[0-9a-f]{8,}\S*|\bdose[0-9a-f]{8,}\S*"
    r"|\beyJ[\w-]+\.[\w-]+\.[\w-]*"
)


class ServingSyncError(RuntimeError):
    """A serving endpoint could not be created or updated; the message says what to check."""


def served_entity_name(use_case: str, version: str) -> str:
    """`<use_case>-v<version>`: a valid served entity name (letters, digits, '-', '_'; at most 63 characters).

    A three-level model name gives its last part (`ontos.workbench.invoices` -> `invoices-v3`)."""
    base = _NOT_NAME.sub("-", str(use_case).rsplit(".", 1)[-1]).strip("-_") or "model"
    suffix = "-v" + (_NOT_NAME.sub("-", str(version)).strip("-") or "0")
    if len(suffix) >= MAX_NAME:
        raise ValueError(f"model version {version!r} is too long for a served entity name")
    return base[: MAX_NAME - len(suffix)].rstrip("-_") + suffix


def endpoint_entities(
    model_name: str,
    champion: str,
    challenger: str | None = None,
    challenger_percent: int = 0,
    workload_size: str = "Small",
    scale_to_zero: bool = True,
) -> tuple[list[ServedEntityInput], TrafficConfig | None]:
    """Served entities for the champion (and the challenger) of `model_name` (`catalog.schema.model`), and the
    traffic split when the challenger gets `challenger_percent` of the requests (None: the champion gets all)."""
    if len(str(model_name).split(".")) != 3 or not all(str(model_name).split(".")):
        raise ValueError(f"model name {model_name!r} must be a Unity Catalog name catalog.schema.model")
    champion = _version(champion, "champion")

    def entity(version: str) -> ServedEntityInput:
        return ServedEntityInput(
            name=served_entity_name(model_name, version),
            entity_name=model_name,
            entity_version=version,
            workload_size=workload_size,
            scale_to_zero_enabled=scale_to_zero,
        )

    if challenger is None:
        if challenger_percent:
            raise ValueError(f"challenger_percent={challenger_percent} but no challenger version is given")
        return [entity(champion)], None
    challenger = _version(challenger, "challenger")
    if challenger == champion:
        raise ValueError(f"the challenger is the champion (version {champion}); give another version or none")
    if (
        isinstance(challenger_percent, bool)
        or not isinstance(challenger_percent, int)
        or not 0 < challenger_percent < 100
    ):
        raise ValueError(
            f"challenger_percent must be an integer with 0 < percent < 100 (the champion keeps the "
            f"rest), got {challenger_percent!r}"
        )
    entities = [entity(champion), entity(challenger)]
    routes = [
        Route(served_entity_name=entities[0].name, traffic_percentage=100 - challenger_percent),
        Route(served_entity_name=entities[1].name, traffic_percentage=challenger_percent),
    ]
    return entities, TrafficConfig(routes=routes)


def _version(version: object, what: str) -> str:
    text = str(version).strip() if version is not None else ""
    if not text:
        raise ValueError(f"the {what} model version is empty")
    return text


def inference_tables(catalog: str, schema: str, endpoint_name: str) -> AiGatewayConfig:
    """AI Gateway config logging every request of the endpoint to `<catalog>.<schema>.<prefix>_payload`."""
    return AiGatewayConfig(
        inference_table_config=AiGatewayInferenceTableConfig(
            catalog_name=catalog, schema_name=schema, table_name_prefix=table_name_prefix(endpoint_name), enabled=True
        )
    )


class PiiBehavior(Enum):
    """The REST API's PII behaviours (databricks-sdk 0.60's enum lacks MASK; the SDK serializes `.value`)."""

    NONE = "NONE"
    BLOCK = "BLOCK"
    MASK = "MASK"


PII_BEHAVIOR = {"off": PiiBehavior.NONE, "redact": PiiBehavior.MASK, "refuse": PiiBehavior.BLOCK}


def gateway_config(
    catalog: str, schema: str, endpoint_name: str, guardrails: GuardrailsSpec | None = None
) -> AiGatewayConfig:
    """The AI Gateway config of an endpoint: its inference table, and the guardrails and rate limit declared."""
    config = inference_tables(catalog, schema, endpoint_name)
    if guardrails is None:
        return config

    def pii(action: str) -> AiGatewayGuardrailParameters | None:
        if action == "off":
            return None
        return AiGatewayGuardrailParameters(pii=AiGatewayGuardrailPiiBehavior(behavior=PII_BEHAVIOR[action]))  # type: ignore[arg-type]

    if guardrails.pii.active:
        config.guardrails = AiGatewayGuardrails(input=pii(guardrails.pii.inputs), output=pii(guardrails.pii.outputs))
    if guardrails.rate_limit is not None:
        config.rate_limits = [
            AiGatewayRateLimit(
                calls=guardrails.rate_limit.requests_per_minute,
                key=AiGatewayRateLimitKey.USER,
                renewal_period=AiGatewayRateLimitRenewalPeriod.MINUTE,
            )
        ]
    return config


def _rules(config: AiGatewayConfig | None) -> tuple:
    """The guardrails and rate limits of a gateway config, comparable between what is read and what is wanted."""

    def pii(params: AiGatewayGuardrailParameters | None) -> str:
        if params is None or params.pii is None:
            return "NONE"
        # databricks-sdk 0.60 reads the newer API value MASK as None (its enum has BLOCK and NONE only)
        return "MASK" if params.pii.behavior is None else params.pii.behavior.value

    guards = config.guardrails if config else None
    limits = sorted(
        (r.calls, r.key.value if r.key else None, r.renewal_period.value if r.renewal_period else None, r.principal)
        for r in ((config.rate_limits if config else None) or [])
    )
    return pii(guards.input if guards else None), pii(guards.output if guards else None), tuple(limits)


def sync_endpoint(
    client: WorkspaceClient,
    endpoint_name: str,
    model_name: str,
    champion: str,
    *,
    catalog: str,
    schema: str,
    challenger: str | None = None,
    challenger_percent: int = 0,
    workload_size: str = "Small",
    scale_to_zero: bool = True,
    guardrails: GuardrailsSpec | None = None,
) -> str:
    """Make `endpoint_name` serve `champion` (plus `challenger` on `challenger_percent` of the traffic) with
    inference tables in `catalog.schema`. Returns "created", "updated" or "unchanged"; does not wait for readiness.
    With `guardrails` (the use case's `serving.guardrails`), the AI Gateway guardrails and rate limits become the
    declared ones (none declared: none); without, whatever the gateway has is kept.

    A rollback is the same call with the older version."""
    if not _ENDPOINT.match(str(endpoint_name)):
        raise ValueError(f"endpoint name {endpoint_name!r} must be 1 to {MAX_NAME} letters, digits, '-' or '_'")
    entities, traffic = endpoint_entities(
        model_name, champion, challenger, challenger_percent, workload_size, scale_to_zero
    )
    if traffic is None:  # explicit, so that leaving a champion/challenger split sends all traffic back
        traffic = TrafficConfig(routes=[Route(served_entity_name=entities[0].name, traffic_percentage=100)])
    gateway = gateway_config(catalog, schema, endpoint_name, guardrails)
    where = _Where(endpoint_name, model_name, catalog, schema)
    try:
        current = client.serving_endpoints.get(endpoint_name)
    except NotFound:
        current = None
    except OSError as exc:  # DatabricksError and transport errors
        raise where.error("get", exc) from None
    if current is None:
        where.call(
            "create",
            lambda: client.serving_endpoints.create(  # a Wait: readiness is not awaited
                endpoint_name,
                config=EndpointCoreConfigInput(name=endpoint_name, served_entities=entities, traffic_config=traffic),
                ai_gateway=gateway,
            ),
        )
        return CREATED
    changed = False
    same_table = _same_inference_table(current.ai_gateway, gateway.inference_table_config)
    same_rules = guardrails is None or _rules(current.ai_gateway) == _rules(gateway)
    if not same_table or not same_rules:
        _put_inference_table(
            client, where, current.ai_gateway, gateway.inference_table_config, gateway if guardrails else None
        )
        changed = True
    if _served(current) != _wanted(entities, traffic):
        where.call(
            "update_config",
            lambda: client.serving_endpoints.update_config(
                endpoint_name, served_entities=entities, traffic_config=traffic
            ),
        )
        changed = True
    return UPDATED if changed else UNCHANGED


def _wanted(entities: list[ServedEntityInput], traffic: TrafficConfig | None) -> tuple:
    served = frozenset(
        (e.name, e.entity_name, str(e.entity_version), e.workload_size, e.scale_to_zero_enabled) for e in entities
    )
    routes = (
        {r.served_entity_name: r.traffic_percentage for r in traffic.routes} if traffic else {entities[0].name: 100}
    )
    return served, routes


def _served(endpoint: ServingEndpointDetailed) -> tuple:
    """What the endpoint serves (or is updating to), in the shape of `_wanted`."""
    config = endpoint.pending_config or endpoint.config
    entities = (config.served_entities if config else None) or []
    served = frozenset(
        (
            e.name,
            e.entity_name,
            str(e.entity_version) if e.entity_version is not None else None,
            e.workload_size,
            e.scale_to_zero_enabled,
        )
        for e in entities
    )
    routes = (
        {r.served_entity_name: r.traffic_percentage for r in (config.traffic_config.routes or [])}
        if config and config.traffic_config
        else {}
    )
    if not routes and len(entities) == 1:
        routes = {entities[0].name: 100}  # no traffic config: the single entity gets everything
    return served, routes


def _same_inference_table(current: AiGatewayConfig | None, wanted: AiGatewayInferenceTableConfig) -> bool:
    have = current.inference_table_config if current else None
    if have is None or not have.enabled:
        return False
    return all(
        (a or "").lower() == (b or "").lower()
        for a, b in (
            (have.catalog_name, wanted.catalog_name),
            (have.schema_name, wanted.schema_name),
            (have.table_name_prefix, wanted.table_name_prefix),
        )
    )


def _put_inference_table(
    client: WorkspaceClient,
    where: _Where,
    current: AiGatewayConfig | None,
    wanted: AiGatewayInferenceTableConfig,
    rules: AiGatewayConfig | None = None,
) -> None:
    """Set the inference table (and the guardrails and rate limits of `rules`, when given), keeping the rest of
    the AI Gateway config (a PUT replaces all of it). An enabled table elsewhere is disabled first: Databricks only
    moves an inference table that way."""
    keep = current or AiGatewayConfig()
    have = keep.inference_table_config
    guards, limits = (rules.guardrails, rules.rate_limits) if rules is not None else (keep.guardrails, keep.rate_limits)

    def put(config: AiGatewayInferenceTableConfig):
        return lambda: client.serving_endpoints.put_ai_gateway(
            where.endpoint,
            inference_table_config=config,
            fallback_config=keep.fallback_config,
            guardrails=guards,
            rate_limits=limits,
            usage_tracking_config=keep.usage_tracking_config,
        )

    if have is not None and have.enabled and not _same_inference_table(current, wanted):
        where.call(
            "put_ai_gateway (disable the old inference table)", put(AiGatewayInferenceTableConfig(enabled=False))
        )
    where.call("put_ai_gateway", put(wanted))


class _Where:
    """The endpoint being synced, to turn SDK errors into `ServingSyncError`s that say what to check."""

    def __init__(self, endpoint: str, model: str, catalog: str, schema: str):
        self.endpoint, self.model, self.catalog, self.schema = endpoint, model, catalog, schema

    def call(self, operation: str, fn):
        try:
            return fn()
        except OSError as exc:  # DatabricksError and transport errors
            raise self.error(operation, exc) from None

    def error(self, operation: str, exc: BaseException) -> ServingSyncError:
        code = getattr(exc, "error_code", None)
        detail = f"{code or type(exc).__name__}: {server_message(exc).rstrip('. ')}"
        permissions = (
            f"check that you have CAN_MANAGE on serving endpoint {self.endpoint!r} (creating it needs "
            f"the right to create serving endpoints), EXECUTE on model {self.model}, and USE CATALOG "
            f"on {self.catalog}, USE SCHEMA and CREATE TABLE on {self.catalog}.{self.schema} for the "
            "inference tables"
        )
        if isinstance(exc, ResourceConflict):
            hint = (
                "another configuration update of the endpoint is in progress: wait until it finishes (or "
                "fails) and sync again"
            )
        elif isinstance(exc, Unauthenticated):
            hint = (
                "the workspace did not accept the credentials: check DATABRICKS_HOST and DATABRICKS_TOKEN (or the "
                "OAuth client / config profile) the client was built from"
            )
        elif isinstance(exc, PermissionDenied):
            hint = permissions
        elif not isinstance(exc, DatabricksError):
            hint = "the workspace could not be reached: check DATABRICKS_HOST and the network, then sync again"
        elif isinstance(exc, NotFound):
            hint = (
                f"check that model {self.model} and the versions exist in Unity Catalog and that catalog "
                f"{self.catalog} and schema {self.catalog}.{self.schema} exist; {permissions}"
            )
        else:
            hint = permissions
        return ServingSyncError(f"serving endpoint {self.endpoint!r}: {operation} failed: {detail}. Hint: {hint}")


def server_message(exc: BaseException) -> str:
    """The server's message of an SDK error, without the request log the SDK appends to unparseable errors (it
    holds the request headers, the token included) and with anything token-like masked."""
    text = str(exc)
    for marker in ("unable to parse response.", "Request log:"):
        if marker in text:
            text = text.split(marker, 1)[0].rstrip() or "the server's answer could not be parsed"
    text = _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)
    return text[:500]
