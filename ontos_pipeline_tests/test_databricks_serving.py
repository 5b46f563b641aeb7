"""Model Serving through the real databricks-sdk against the fake workspace: create with inference tables, new
versions, a challenger share, no-op syncs, rollback, AI Gateway repair and permission errors (bodies asserted)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from databricks.sdk import WorkspaceClient

from ontos_pipeline.databricks.serving import (
    ServingSyncError,
    endpoint_entities,
    inference_tables,
    served_entity_name,
    server_message,
    sync_endpoint,
)
from ontos_pipeline.platform.tables import payload_table
from ontos_pipeline_tests.fake_workspace import FakeWorkspace

ENDPOINT = "invoice-fields"
MODEL = "ontos.workbench.invoice_fields"
PLACE = {"catalog": "ontos", "schema": "workbench"}
SERVING = r"^/api/2\.0/serving-endpoints"


@pytest.fixture
def ws(tmp_path):
    with FakeWorkspace(tmp_path) as workspace:
        yield workspace


@pytest.fixture
def client(ws) -> WorkspaceClient:
    return WorkspaceClient(host=ws.url, token=ws.token, auth_type="pat")


def _served(ws) -> dict[str, str]:
    """served entity name -> version, as the fake workspace stores the endpoint."""
    return {e["name"]: e["entity_version"] for e in ws.endpoints[ENDPOINT]["config"]["served_entities"]}


def _puts(ws) -> list:
    return ws.calls(SERVING + f"/{ENDPOINT}/config$", "PUT")


def test_names_entities_and_tables():
    assert served_entity_name("invoice_fields", "3") == "invoice_fields-v3"
    assert served_entity_name(MODEL, "12") == "invoice_fields-v12"
    assert len(served_entity_name("x" * 100, "7")) == 63
    entities, traffic = endpoint_entities(MODEL, "3")
    assert [(e.name, e.entity_name, e.entity_version, e.workload_size, e.scale_to_zero_enabled) for e in entities] == [
        ("invoice_fields-v3", MODEL, "3", "Small", True)
    ] and traffic is None
    _, split = endpoint_entities(MODEL, "3", "4", 25)
    assert [(r.served_entity_name, r.traffic_percentage) for r in split.routes] == [
        ("invoice_fields-v3", 75),
        ("invoice_fields-v4", 25),
    ]
    for challenger, percent in (("4", 0), ("4", 100), ("4", -5), ("3", 10), (None, 10)):
        with pytest.raises(ValueError, match="challenger"):
            endpoint_entities(MODEL, "3", challenger, percent)
    with pytest.raises(ValueError, match=r"catalog\.schema\.model"):
        endpoint_entities("invoice_fields", "3")
    assert inference_tables("ontos", "workbench", ENDPOINT).as_dict() == {
        "inference_table_config": {
            "catalog_name": "ontos",
            "schema_name": "workbench",
            "table_name_prefix": "invoice_fields",
            "enabled": True,
        }
    }
    assert payload_table("ontos", "workbench", ENDPOINT) == "ontos.workbench.invoice_fields_payload"


def test_create_sends_entities_and_inference_tables_in_one_call_without_waiting(ws, client):
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "created"
    creates = ws.calls(SERVING + "$", "POST")
    assert len(creates) == 1
    body = creates[0].body
    assert body["name"] == ENDPOINT
    assert [(e["name"], e["entity_name"], e["entity_version"]) for e in body["config"]["served_entities"]] == [
        ("invoice_fields-v3", MODEL, "3")
    ]
    assert body["config"]["traffic_config"] == {
        "routes": [{"served_entity_name": "invoice_fields-v3", "traffic_percentage": 100}]
    }
    assert body["ai_gateway"] == {
        "inference_table_config": {
            "catalog_name": "ontos",
            "schema_name": "workbench",
            "table_name_prefix": "invoice_fields",
            "enabled": True,
        }
    }
    # one GET (does it exist?) before the create, none after: readiness is not awaited
    assert [(r.method, r.path) for r in ws.requests] == [
        ("GET", f"/api/2.0/serving-endpoints/{ENDPOINT}"),
        ("POST", "/api/2.0/serving-endpoints"),
    ]
    assert ws.server_errors == []


def test_new_version_challenger_share_no_op_and_rollback(ws, client):
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "created"
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "unchanged"
    assert _puts(ws) == [] and ws.calls("ai-gateway") == []

    assert sync_endpoint(client, ENDPOINT, MODEL, "4", **PLACE) == "updated"
    put = _puts(ws)[-1].body
    assert [(e["entity_name"], e["entity_version"]) for e in put["served_entities"]] == [(MODEL, "4")]
    assert _served(ws) == {"invoice_fields-v4": "4"}
    assert ws.calls("ai-gateway") == []  # inference tables were already configured at create

    assert sync_endpoint(client, ENDPOINT, MODEL, "4", challenger="5", challenger_percent=10, **PLACE) == "updated"
    put = _puts(ws)[-1].body
    routes = {r["served_entity_name"]: r["traffic_percentage"] for r in put["traffic_config"]["routes"]}
    assert routes == {"invoice_fields-v4": 90, "invoice_fields-v5": 10} and sum(routes.values()) == 100
    assert _served(ws) == {"invoice_fields-v4": "4", "invoice_fields-v5": "5"}
    before = len(_puts(ws))
    assert sync_endpoint(client, ENDPOINT, MODEL, "4", challenger="5", challenger_percent=10, **PLACE) == "unchanged"
    assert len(_puts(ws)) == before

    # rollback: the same call with an older version re-points the endpoint and drops the split
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "updated"
    put = _puts(ws)[-1].body
    assert [(e["name"], e["entity_version"]) for e in put["served_entities"]] == [("invoice_fields-v3", "3")]
    assert put["traffic_config"] == {"routes": [{"served_entity_name": "invoice_fields-v3", "traffic_percentage": 100}]}
    assert _served(ws) == {"invoice_fields-v3": "3"}
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "unchanged"
    assert ws.server_errors == []


def test_missing_inference_tables_are_added_and_other_gateway_settings_kept(ws, client):
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "created"
    limits = [{"calls": 100, "key": "user", "renewal_period": "minute"}]
    ws.endpoints[ENDPOINT]["ai_gateway"] = {"rate_limits": limits}  # someone replaced the gateway config
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "updated"
    (put,) = ws.calls(SERVING + f"/{ENDPOINT}/ai-gateway$", "PUT")
    assert put.body == {
        "inference_table_config": {
            "catalog_name": "ontos",
            "schema_name": "workbench",
            "table_name_prefix": "invoice_fields",
            "enabled": True,
        },
        "rate_limits": limits,
    }
    assert _puts(ws) == []  # the served entities did not change
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "unchanged"

    # moving the table to another schema: Databricks needs it disabled first
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", catalog="ontos", schema="serving") == "updated"
    puts = [r.body["inference_table_config"] for r in ws.calls(SERVING + f"/{ENDPOINT}/ai-gateway$", "PUT")[1:]]
    assert puts == [
        {"enabled": False},
        {"catalog_name": "ontos", "schema_name": "serving", "table_name_prefix": "invoice_fields", "enabled": True},
    ]


def test_permission_denied_names_the_endpoint_and_what_to_check(ws, client):
    ws.fail("POST", SERVING + "$", 403, message="User does not have permission to create serving endpoints.")
    with pytest.raises(ServingSyncError) as caught:
        sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE)
    message = str(caught.value)
    assert f"serving endpoint '{ENDPOINT}': create failed" in message
    assert "User does not have permission to create serving endpoints" in message
    assert "CAN_MANAGE" in message and "USE SCHEMA and CREATE TABLE on ontos.workbench" in message
    assert ws.token not in message and "Bearer" not in message
    assert ws.endpoints == {}

    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "created"
    ws.fail("PUT", SERVING + f"/{ENDPOINT}/config$", 403, message="User lacks CAN_MANAGE on the endpoint.")
    with pytest.raises(
        ServingSyncError,
        match=f"'{ENDPOINT}': update_config failed: PERMISSION_DENIED: User lacks CAN_MANAGE on the endpoint",
    ):
        sync_endpoint(client, ENDPOINT, MODEL, "4", **PLACE)
    assert _served(ws) == {"invoice_fields-v3": "3"}


def test_other_server_errors_are_wrapped_with_a_hint(ws, client):
    ws.models[MODEL] = {"aliases": {}, "versions": ["3"]}
    with pytest.raises(
        ServingSyncError,
        match=r"create failed: RESOURCE_DOES_NOT_EXIST: Model version "
        r".*/9 does not exist\. Hint: check that model .* exist",
    ):
        sync_endpoint(client, ENDPOINT, MODEL, "9", **PLACE)
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "created"
    ws.fail("PUT", SERVING + f"/{ENDPOINT}/config$", 409, message="Endpoint is currently being updated.")
    with pytest.raises(ServingSyncError, match="wait until it finishes"):
        sync_endpoint(client, ENDPOINT, MODEL, "3", challenger="3.1", challenger_percent=5, **PLACE)


def test_rejected_credentials_point_at_the_client_settings(ws):
    stranger = WorkspaceClient(host=ws.url, token="dapi0123456789abcdef", auth_type="pat")
    with pytest.raises(ServingSyncError) as caught:
        sync_endpoint(stranger, ENDPOINT, MODEL, "3", **PLACE)
    message = str(caught.value)
    assert "get failed: UNAUTHENTICATED" in message and "check DATABRICKS_HOST and DATABRICKS_TOKEN" in message
    assert "dapi0123456789abcdef" not in message and ws.endpoints == {}


def test_the_request_log_the_sdk_appends_never_reaches_the_message():
    raw = (
        "unable to parse response. This is likely a bug ... Request log:```GET /api/2.0/serving-endpoints/x\n"
        "> * Authorization: Bearer dapi0123456789abcdef0123\n< 502 Bad Gateway```"
    )
    assert server_message(OSError(raw)) == "the server's answer could not be parsed"
    assert "dapi0123" not in server_message(OSError("token dapi0123456789abcdef0123 refused"))
    assert server_message(OSError("Authorization: Bearer abc")) == "Authorization: [redacted]"


def test_the_use_cases_guardrails_configure_the_ai_gateway(ws, client):
    from ontos_pipeline.specs import GuardrailsSpec, PiiGuardrailSpec, RateLimitSpec

    declared = GuardrailsSpec(
        PiiGuardrailSpec(inputs="redact", outputs="refuse"), True, 0.4, RateLimitSpec(requests_per_minute=600, burst=60)
    )
    table = {
        "catalog_name": "ontos",
        "schema_name": "workbench",
        "table_name_prefix": "invoice_fields",
        "enabled": True,
    }
    gateway = {
        "inference_table_config": table,
        "guardrails": {"input": {"pii": {"behavior": "MASK"}}, "output": {"pii": {"behavior": "BLOCK"}}},
        "rate_limits": [{"calls": 600, "renewal_period": "minute", "key": "user"}],
    }
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", guardrails=declared, **PLACE) == "created"
    (create,) = ws.calls(SERVING + "$", "POST")
    assert create.body["ai_gateway"] == gateway  # the burst, the schema and the floor stay local
    # read back (the SDK cannot parse MASK): nothing to change
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", guardrails=declared, **PLACE) == "unchanged"
    assert ws.calls("ai-gateway") == []

    # the declarations change: one PUT with the whole gateway config, the inference table kept as it is
    looser = replace(declared, pii=PiiGuardrailSpec(inputs="refuse"), rate_limit=RateLimitSpec(1200, 100))
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", guardrails=looser, **PLACE) == "updated"
    (put,) = ws.calls(SERVING + f"/{ENDPOINT}/ai-gateway$", "PUT")
    assert put.body == {
        "inference_table_config": table,
        "guardrails": {"input": {"pii": {"behavior": "BLOCK"}}},
        "rate_limits": [{"calls": 1200, "renewal_period": "minute", "key": "user"}],
    }
    assert ws.endpoints[ENDPOINT]["ai_gateway"] == put.body and _puts(ws) == []
    # no guardrails declared: none on the gateway; without declarations (None) the gateway's are kept
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", guardrails=GuardrailsSpec(), **PLACE) == "updated"
    assert ws.calls(SERVING + f"/{ENDPOINT}/ai-gateway$", "PUT")[-1].body == {"inference_table_config": table}
    assert sync_endpoint(client, ENDPOINT, MODEL, "3", **PLACE) == "unchanged"
    assert ws.server_errors == []


def test_publish_serves_the_ab_arm_on_its_share_and_one_entity_after_promote_or_end(ws, monkeypatch):
    """The deploy events of an A/B test, published: a split sends two served entities and routes summing to 100;
    promoting or ending sends every request back to one entity (create, then PUT /config bodies asserted)."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from ontos_pipeline.deploy.endpoints import EndpointEvent
    from ontos_pipeline.resources.databricks import DatabricksServingResource
    from ontos_pipeline.specs import ServingSpec

    for var in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", ws.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", ws.token)
    monkeypatch.setenv("DATABRICKS_AUTH_TYPE", "pat")
    serving = DatabricksServingResource(catalog="ontos", schema_name="workbench")
    spec = SimpleNamespace(name="invoice_fields", serving=ServingSpec(ENDPOINT))

    def publish(event: str, served: str, previous: str | None, arm: str | None = None, percent: int | None = None):
        serving.publish(
            spec,  # type: ignore[arg-type]
            EndpointEvent("e", ENDPOINT, spec.name, event, served, previous, "", "t", datetime.now(UTC), arm, percent),
        )

    def entities_and_routes(config: dict) -> tuple[dict, dict]:
        entities = {e["name"]: e["entity_version"] for e in config["served_entities"]}
        routes = {r["served_entity_name"]: r["traffic_percentage"] for r in config["traffic_config"]["routes"]}
        assert sum(routes.values()) == 100 and set(routes) == set(entities)
        return entities, routes

    publish("split", "3", "3", "4", 30)  # start: the endpoint is created with both arms
    create = ws.calls(SERVING + "$", "POST")[-1].body
    assert entities_and_routes(create["config"]) == (
        {"invoice_fields-v3": "3", "invoice_fields-v4": "4"},
        {"invoice_fields-v3": 70, "invoice_fields-v4": 30},
    )
    publish("split", "3", "3", "4", 30)  # the test goes on: nothing to change
    assert _puts(ws) == []

    publish("deploy", "4", "3", "4", 0)  # promoted: the arm gets every request, one entity
    assert entities_and_routes(_puts(ws)[-1].body) == ({"invoice_fields-v4": "4"}, {"invoice_fields-v4": 100})

    publish("split", "4", "4", "5", 10)  # a newer challenger on 10%
    assert entities_and_routes(_puts(ws)[-1].body) == (
        {"invoice_fields-v4": "4", "invoice_fields-v5": "5"},
        {"invoice_fields-v4": 90, "invoice_fields-v5": 10},
    )
    publish("keep", "4", "4", "5", 0)  # ended (worse): back to the champion alone
    assert entities_and_routes(_puts(ws)[-1].body) == ({"invoice_fields-v4": "4"}, {"invoice_fields-v4": 100})
    assert _served(ws) == {"invoice_fields-v4": "4"}
    assert ws.server_errors == []
