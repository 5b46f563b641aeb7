"""The serving process against real registered MLflow models: request shapes, errors, hot swap, the inference log,
feedback, and the deploy/rollback decisions behind the `champion` alias. A real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import jsonschema
import mlflow
import pytest
import requests

from ontos_pipeline.deploy.endpoints import DeployError, deploy, history, rollback
from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG, recover
from ontos_pipeline.deploy.serving.server import BackgroundServer, ServingOptions
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.model_store import CHALLENGER, CHAMPION, local_store
from ontos_pipeline.train.tracking import log_pyfunc, number_types
from ontos_pipeline.train.trainer.local import RESPONSE, LocalTrainer, TrainingData
from ontos_pipeline_tests.conftest import AUTH, SERVE_TOKEN, make_settings
from ontos_pipeline_tests.kinds import items, registered_enum_versions

ENDPOINT = "enum_case"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A home whose registry holds two versions of the enum model (v1 baseline, v2 trained), champion = v1."""
    root = tmp_path_factory.mktemp("serving")
    cases = root / "use_cases"
    cases.mkdir()
    spec, store, versions = registered_enum_versions(cases, root / "home")
    return {
        "settings": make_settings(root / "home", cases),
        "store": store,
        "spec": spec,
        "versions": versions,
        "lakehouse": LocalLakehouse(root / "home" / "tables"),
    }


@pytest.fixture
def champion_v1(served):
    served["store"].set_alias(served["spec"].name, CHAMPION, served["versions"][0])
    return served


def api_post(url: str, headers: dict | None = None, **kwargs) -> requests.Response:
    """requests.post with the tests' bearer token."""
    return requests.post(url, headers={**AUTH, **(headers or {})}, **kwargs)


def api_get(url: str, headers: dict | None = None, **kwargs) -> requests.Response:
    return requests.get(url, headers={**AUTH, **(headers or {})}, **kwargs)


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(served, **options) -> BackgroundServer:
    return BackgroundServer(served["settings"], ServingOptions(port=_port(), **options))


def _records(n: int, seed: int = 7) -> list[dict]:
    frame = items("enum", n, seed).drop(columns=[RESPONSE])
    return json.loads(frame.to_json(orient="records"))


def _logged(served, ids: list[str]) -> dict[str, dict]:
    rows = served["lakehouse"].records(INFERENCE_LOG)
    return {r["request_id"]: r for r in rows if r["request_id"] in set(ids)}


def test_the_three_databricks_request_shapes_give_the_same_predictions(champion_v1):
    served = champion_v1
    records = _records(3)
    columns = list(records[0])
    with _server(served) as server:
        url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
        answers = [
            api_post(url, json=body, timeout=30)
            for body in (
                {"dataframe_records": records},
                {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}},
                {"inputs": records},
                {"inputs": {c: [r[c] for r in records] for c in columns}},
            )
        ]
        listing = api_get(f"{server.url}/serving-endpoints", timeout=30).json()["endpoints"]
        health = api_get(f"{server.url}/health", timeout=30).json()
    assert [a.status_code for a in answers] == [200] * 4
    predictions = [a.json()["predictions"] for a in answers]
    assert all(p == predictions[0] for p in predictions) and len(predictions[0]) == 3
    for p in predictions[0]:
        jsonschema.validate(p["response"], served["spec"].template.response_schema)
        assert 0 <= p["confidence"] <= 1
    assert {a.headers["x-model-version"] for a in answers} == {served["versions"][0]}
    assert listing == [
        {
            **listing[0],
            "name": ENDPOINT,
            "state": "READY",
            "served_version": served["versions"][0],
            "model": f"ontos.workbench.{served['spec'].name}",
        }
    ]
    assert health["status"] == "ok" and health["endpoints"] == {ENDPOINT: "READY"}


def test_bad_input_gets_a_named_4xx_never_a_500_and_every_request_is_logged(champion_v1):
    served = champion_v1
    record = _records(1)[0]
    url_of = "{}/serving-endpoints/{}/invocations".format
    with _server(served) as server:
        url = url_of(server.url, ENDPOINT)
        cases = {
            "malformed": api_post(url, data=b'{"dataframe_records": [', timeout=30),
            "unknown endpoint": api_post(url_of(server.url, "nope"), json={"inputs": [record]}, timeout=30),
            "missing column": api_post(url, json={"dataframe_records": [{"x": 1.0}]}, timeout=30),
            "mistyped column": api_post(url, json={"dataframe_records": [{**record, "x": "high"}]}, timeout=30),
            "no shape": api_post(url, json={"records": [record]}, timeout=30),
            "oversized": api_post(url, data=b" " * 6_000_000, timeout=30),
            "too many rows": api_post(url, json={"dataframe_records": [record] * 1001}, timeout=30),
            "ok": api_post(url, json={"dataframe_records": [record]}, timeout=30),
        }
    status = {k: r.status_code for k, r in cases.items()}
    assert status == {
        "malformed": 400,
        "unknown endpoint": 404,
        "missing column": 400,
        "mistyped column": 400,
        "no shape": 400,
        "oversized": 413,
        "too many rows": 413,
        "ok": 200,
    }
    message = {k: r.json().get("message", "") for k, r in cases.items()}
    assert "malformed JSON at line 1" in message["malformed"]
    assert "no endpoint named 'nope'" in message["unknown endpoint"]
    assert "missing column(s) color, note" in message["missing column"]
    assert "record 0: column 'x' must be double" in message["mistyped column"]
    assert "dataframe_records, dataframe_split, inputs" in message["no shape"]
    logged = _logged(served, [r.headers["x-request-id"] for r in cases.values()])
    assert len(logged) == len(cases)  # failures included: the log equals the answered requests
    for name, response in cases.items():
        row = logged[response.headers["x-request-id"]]
        assert row["status_code"] == response.status_code, name
        assert (row["error"] is None) == (name == "ok"), name
        assert row["latency_ms"] > 0 and row["endpoint_name"] == ("nope" if name == "unknown endpoint" else ENDPOINT)
    assert json.loads(logged[cases["ok"].headers["x-request-id"]]["response"]) == cases["ok"].json()["predictions"]


def test_hot_swap_serves_the_new_champion_without_failing_a_request(champion_v1):
    served = champion_v1
    records = _records(4)
    v1, v2 = served["versions"]
    seen: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        session.headers.update(AUTH)
        while not stop.is_set():
            r = session.post(url, json={"dataframe_records": records}, timeout=60)
            seen.append((r.headers["x-request-id"], r.status_code, r.headers.get("x-model-version")))

    with _server(served, poll_seconds=0.2) as server:
        url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        served["store"].set_alias(served["spec"].name, CHAMPION, v2)  # what serving_endpoint does on deploy
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(v == v2 for _, _, v in seen) < 20:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        time.sleep(0.5)  # a few more alias polls
        loads = api_get(f"{server.url}/health", timeout=30).json()["model_loads"]
    assert loads == 2  # v1 at start, v2 once: an unchanged alias never reloads
    assert seen and all(status == 200 for _, status, _ in seen)
    assert {v for _, _, v in seen} == {v1, v2}
    logged = sorted(_logged(served, [rid for rid, _, _ in seen]).values(), key=lambda r: r["request_time"])
    assert len(logged) == len(seen)
    versions = [r["model_version"] for r in logged]
    switch = versions.index(v2)
    assert set(versions[:switch]) == {v1} and set(versions[switch:]) == {v2}  # in order: never back to v1


def test_feedback_is_validated_numbered_and_never_dropped(champion_v1):
    served = champion_v1
    with _server(served) as server:
        answer = api_post(
            f"{server.url}/serving-endpoints/{ENDPOINT}/invocations",
            json={"dataframe_records": _records(1)},
            timeout=30,
        )
        rid = answer.headers["x-request-id"]
        post = lambda body: api_post(f"{server.url}/feedback", json=body, timeout=30)  # noqa: E731
        up = post({"request_id": rid, "rating": "up", "comment": "right", "author": "ann"})
        fix = post({"request_id": rid, "rating": "down", "correction": "high"})
        bad = post({"request_id": rid, "correction": "enormous"})
        stranger = post({"endpoint": ENDPOINT, "request_id": "no-such-request", "rating": "down"})
        structural = [
            post({"request_id": rid}),
            post({"request_id": rid, "rating": "meh"}),
            post({"rating": "up"}),
            post({"endpoint": "nope", "item_ref": "I1", "rating": "up"}),
            post([]),
        ]
        batch = post(
            [{"endpoint": ENDPOINT, "item_ref": "I7-0001", "rating": "up"}, {"request_id": rid, "correction": "low"}]
        )
    assert (up.status_code, fix.status_code) == (201, 201)
    assert (bad.status_code, bad.json()["status"]) == (422, "rejected")
    assert "correction does not match the response schema" in bad.json()["message"]
    assert (stranger.status_code, stranger.json()["reason"]) == (422, "unknown request_id 'no-such-request'")
    assert [r.status_code for r in structural] == [400, 400, 400, 404, 400]
    assert "give a rating" in structural[0].json()["message"]
    assert batch.status_code == 201 and [f["status"] for f in batch.json()["feedback"]] == ["new", "new"]
    rows = sorted(served["lakehouse"].records("feedback"), key=lambda r: r["seq"])
    mine = [r for r in rows if r["request_id"] in (rid, "no-such-request") or r["item_ref"] == "I7-0001"]
    assert [r["status"] for r in mine] == ["new", "new", "rejected", "rejected", "new", "new"]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # gap-free high-water mark
    by_id = {r["feedback_id"]: r for r in rows}
    assert json.loads(by_id[fix.json()["feedback_id"]]["correction"]) == "high"
    assert by_id[up.json()["feedback_id"]]["item_ref"] == "I7-0000"  # taken from the request's record


def test_hostile_bodies_get_a_named_400_never_a_500_and_are_logged(champion_v1):
    """Defects: a lone surrogate (and that request missing from the inference log), 200,000-deep nesting, list
    column names in dataframe_split, a list item_ref and a list endpoint in feedback were 500s."""
    served = champion_v1
    record = _records(1)[0]
    columns = list(record)
    invocations = {
        "lone surrogate": b'{"inputs": [{"item_ref": "\\ud800"}]}',
        "deep nesting": b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "list column names": json.dumps(
            {"dataframe_split": {"columns": [[c] for c in columns], "data": [[record[c] for c in columns]]}}
        ).encode(),
        "list item_ref": json.dumps({"inputs": [{**record, "item_ref": ["a", "b"]}]}).encode(),
    }
    with _server(served) as server:
        url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
        answers = {k: api_post(url, data=b, timeout=60) for k, b in invocations.items()}
        feedback = {
            "list endpoint": api_post(
                f"{server.url}/feedback", json={"endpoint": [ENDPOINT], "item_ref": "I7-0001", "rating": "up"}
            ),
            "empty endpoint": api_post(  # found by test_fuzz: a 500
                f"{server.url}/feedback", json={"endpoint": "", "item_ref": "I7-0001", "rating": "up"}
            ),
            "surrogate comment": api_post(
                f"{server.url}/feedback",
                data=b'{"endpoint": "enum_case", "item_ref": "I7-0001", "rating": "up", "comment": "\\udfff"}',
            ),
        }
    assert {k: a.status_code for k, a in {**answers, **feedback}.items()} == dict.fromkeys([*answers, *feedback], 400)
    message = {k: a.json()["message"] for k, a in {**answers, **feedback}.items()}
    assert "lone surrogate" in message["lone surrogate"] and "lone surrogate" in message["surrogate comment"]
    assert "nested deeper than 64 levels" in message["deep nesting"]
    assert message["list column names"] == "'dataframe_split' 'columns' must be distinct column names (strings)"
    assert message["list item_ref"] == "record 0: 'item_ref' must be a string (the item's id), not a list"
    assert message["list endpoint"] == "field 'endpoint' must be a string (an endpoint or use case name)"
    assert message["empty endpoint"].startswith("give the 'endpoint' (or 'use_case')")
    logged = _logged(served, [a.headers["x-request-id"] for a in answers.values()])
    assert len(logged) == 4 and {r["status_code"] for r in logged.values()} == {400}


def test_a_client_chosen_request_id_is_kept_apart_from_the_servers_own(champion_v1):
    """Defect: the server took the client's X-Request-Id as the request id: duplicates were logged twice under one
    id, feedback attached to the wrong answer, and recovery after a kill dropped an answered request whose id
    already existed. The id is now always the server's; the client's is logged as client_request_id."""
    served = champion_v1
    first, second = _records(1, seed=11), _records(1, seed=12)
    with _server(served) as server:
        url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
        answers = [
            api_post(url, json={"inputs": body}, headers={"X-Request-Id": "order-42"}, timeout=30)
            for body in (first, second)
        ]
        odd = api_post(url, json={"inputs": first}, headers={"X-Request-Id": "x" * 500}, timeout=30)
        given = api_post(
            f"{server.url}/feedback", json={"request_id": answers[1].headers["x-request-id"], "rating": "up"}
        )
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == 2 and "order-42" not in ids
    assert [a.headers["x-client-request-id"] for a in answers] == ["order-42", "order-42"]
    assert "x-client-request-id" not in odd.headers  # not an id we keep: 500 characters
    logged = _logged(served, [*ids, odd.headers["x-request-id"]])
    assert [logged[i]["client_request_id"] for i in ids] == ["order-42", "order-42"]
    assert logged[odd.headers["x-request-id"]]["client_request_id"] is None
    assert given.status_code == 201 and given.json()["item_ref"] == second[0]["item_ref"]  # the second answer's


def test_feedback_lists_are_bounded_and_their_unknown_request_ids_looked_up_in_one_read(champion_v1):
    """Defect: each unknown request id of a feedback list read the whole inference log on the event loop (100
    items stalled /health 19 s). Now one read for the list, off the loop, and at most 1000 objects a request."""
    served = champion_v1
    lakehouse = served["lakehouse"]
    unknown = [{"endpoint": ENDPOINT, "request_id": f"nope-{i}", "rating": "down"} for i in range(1000)]
    with _server(served) as server:
        before = lakehouse.version("feedback") if lakehouse.exists("feedback") else -1
        too_many = api_post(f"{server.url}/feedback", json=[*unknown, unknown[0]], timeout=60)
        unchanged = lakehouse.version("feedback") if lakehouse.exists("feedback") else -1
        answer = api_post(f"{server.url}/feedback", json=unknown, timeout=120)
        health = api_get(f"{server.url}/health", timeout=30)
    assert too_many.status_code == 413 and "send at most 1000" in too_many.json()["message"] and unchanged == before
    assert answer.status_code == 201 and health.status_code == 200
    results = answer.json()["feedback"]
    assert len(results) == 1000 and {r["status"] for r in results} == {"rejected"}
    assert results[7]["reason"] == "unknown request_id 'nope-7'"
    assert lakehouse.version("feedback") == before + 1  # one commit for the endpoint's 1000 rows


def test_every_route_but_health_needs_a_bearer_token_with_the_routes_scope(champion_v1):
    """Defect: one anonymous POST /feedback with corrections made canonical labels. Now every route but /health
    needs a token (401 without, 403 without the scope), refusals change no table and are counted; the caller's
    name is on the inference log and feedback rows; a revoked token is refused from the next request."""
    from ontos_pipeline.deploy.serving.auth import TokenStore

    served = champion_v1
    store = TokenStore(served["settings"].home)
    app = store.create("checkout-app", ("invoke",), by="ops")
    reviewer = store.create("reviewer", ("feedback",), by="ops")
    assert app not in store.path.read_text() and oct(store.path.stat().st_mode & 0o777) == "0o600"
    lakehouse = served["lakehouse"]
    version = lambda table: lakehouse.version(table) if lakehouse.exists(table) else None  # noqa: E731
    before = {t: (len(lakehouse.records(t)), version(t)) for t in ("feedback", INFERENCE_LOG)}
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    corrections = [{"endpoint": ENDPOINT, "item_ref": f"I7-{i:04d}", "correction": "high"} for i in range(12)]
    with _server(served) as server:
        invoke_url, feedback_url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations", f"{server.url}/feedback"
        body = {"dataframe_records": _records(1)}
        refused = {
            "anonymous feedback": requests.post(feedback_url, json=corrections, timeout=30),
            "anonymous invocation": requests.post(invoke_url, json=body, timeout=30),
            "anonymous listing": requests.get(f"{server.url}/serving-endpoints", timeout=30),
            "not bearer": requests.post(invoke_url, json=body, headers={"Authorization": "Basic eDp5"}, timeout=30),
            "unknown token": requests.post(invoke_url, json=body, headers=bearer("ontos_guess"), timeout=30),
            "feedback with an invoke token": requests.post(
                feedback_url, json=corrections, headers=bearer(app), timeout=30
            ),
            "invocation with a feedback token": requests.post(
                invoke_url, json=body, headers=bearer(reviewer), timeout=30
            ),
        }
        mid_health = requests.get(f"{server.url}/health", timeout=30)
        after = {t: (len(lakehouse.records(t)), version(t)) for t in ("feedback", INFERENCE_LOG)}
        answer = requests.post(invoke_url, json=body, headers=bearer(app), timeout=30)
        given = requests.post(
            feedback_url,
            json={"request_id": answer.headers["x-request-id"], "rating": "down", "author": "mallory"},
            headers=bearer(reviewer),
            timeout=30,
        )
        store.revoke("checkout-app")
        revoked = requests.post(invoke_url, json=body, headers=bearer(app), timeout=30)
        health = requests.get(f"{server.url}/health", timeout=30).json()
    assert {k: r.status_code for k, r in refused.items()} == {
        "anonymous feedback": 401,
        "anonymous invocation": 401,
        "anonymous listing": 401,
        "not bearer": 401,
        "unknown token": 401,
        "feedback with an invoke token": 403,
        "invocation with a feedback token": 403,
    }
    assert refused["anonymous feedback"].headers["www-authenticate"] == "Bearer"
    assert refused["anonymous feedback"].json()["error_code"] == "UNAUTHENTICATED"
    assert "ontos token create" in refused["anonymous invocation"].json()["message"]
    assert "needs 'feedback'" in refused["feedback with an invoke token"].json()["message"]
    assert mid_health.status_code == 200 and after == before  # nothing written for a refused call
    assert (answer.status_code, given.status_code, revoked.status_code) == (200, 201, 401)
    assert health["refused"] == {"401": 6, "403": 2}
    [logged] = _logged(served, [answer.headers["x-request-id"]]).values()
    assert logged["caller"] == "checkout-app"
    [row] = [r for r in lakehouse.records("feedback") if r["feedback_id"] == given.json()["feedback_id"]]
    assert (row["caller"], row["author"]) == ("reviewer", "mallory")


def test_serving_beyond_loopback_needs_a_configured_token(served, tmp_path):
    from dataclasses import replace

    from ontos_pipeline.deploy.serving.server import build_app

    bare = replace(served["settings"], home=tmp_path / "home", serve_token=None)
    with pytest.raises(ValueError, match="needs a token: set ONTOS_SERVE_TOKEN"):
        build_app(bare, ServingOptions(host="0.0.0.0"))
    build_app(bare, ServingOptions(host="127.0.0.1"))  # loopback: starts, refusing every call until one is made
    build_app(replace(bare, serve_token="ontos_x" * 4), ServingOptions(host="0.0.0.0"))


def test_acknowledged_requests_survive_a_hard_stop(champion_v1, tmp_path):
    served = champion_v1
    port = _port()
    env = {
        **os.environ,
        "ONTOS_HOME": str(served["settings"].home),
        "ONTOS_USE_CASES_DIR": str(served["settings"].use_cases_dir),
        "ONTOS_SERVE_TOKEN": SERVE_TOKEN,
    }
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_") or k == "MLFLOW_DISABLE_TELEMETRY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ontos_pipeline.cli", "serve", "--port", str(port), "--flush-seconds", "3600"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if api_get(f"{url}/health", timeout=2).json()["endpoints"].get(ENDPOINT) == "READY":
                    break
            except requests.RequestException:
                time.sleep(0.3)
        ids = [
            api_post(
                f"{url}/serving-endpoints/{ENDPOINT}/invocations",
                json={"dataframe_records": _records(1, seed=i)},
                timeout=30,
            ).headers["x-request-id"]
            for i in range(25)
        ]
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no shutdown hook runs: the buffer was never flushed
        process.wait()
    assert _logged(served, ids) == {}
    spool = served["settings"].home / "serving" / "spool"
    assert recover(served["lakehouse"], spool) == 25
    assert set(_logged(served, ids)) == set(ids)
    assert recover(served["lakehouse"], spool) == 0 and len(_logged(served, ids)) == 25  # idempotent
    assert not any(Path(spool).glob("*/*.jsonl"))


def test_deploy_follows_the_gate_and_rollback_restores_the_previous_version(served, tmp_path):
    store, lakehouse, name, (v1, v2) = (
        served["store"],
        LocalLakehouse(tmp_path / "t"),
        served["spec"].name,
        served["versions"],
    )
    store.client().delete_registered_model_alias(store.model_name(name), CHAMPION)
    store.set_alias(name, CHALLENGER, v1)
    first = deploy(store, lakehouse, name, ENDPOINT, True, "PASS beats_baseline", "run-1")
    store.set_alias(name, CHALLENGER, v2)
    kept = deploy(store, lakehouse, name, ENDPOINT, False, "FAIL meets_minimum: 0.41 < 0.6", "run-2")
    assert str(store.version(name, CHAMPION).version) == v1
    second = deploy(store, lakehouse, name, ENDPOINT, True, "PASS all", "run-3")
    again = deploy(store, lakehouse, name, ENDPOINT, True, "PASS all", "run-4")
    assert [(e.event, e.served_version, e.previous_version) for e in (first, kept, second, again)] == [
        ("deploy", v1, None),
        ("keep", v1, v1),
        ("deploy", v2, v1),
        ("keep", v2, v2),
    ]
    assert kept.reason.startswith(f"gate failed for version {v2}: FAIL meets_minimum: 0.41 < 0.6")
    back = rollback(store, lakehouse, name, ENDPOINT, "ann")
    assert (back.event, back.served_version, back.previous_version, back.actor) == ("rollback", v1, v2, "ann")
    assert str(store.version(name, CHAMPION).version) == v1
    with pytest.raises(DeployError, match=f"version {v1} has no earlier served version"):
        rollback(store, lakehouse, name, ENDPOINT, "ann")
    with pytest.raises(DeployError, match="has no version 99"):
        rollback(store, lakehouse, name, ENDPOINT, "ann", to_version="99")
    assert [e["event"] for e in history(lakehouse, name)] == ["deploy", "keep", "deploy", "keep", "rollback"]
    store.set_alias(name, CHAMPION, v1)


IMAGE_SPEC = """
name: image_case
sheet:
  primary: items
  sources:
    items:
      table: shop.items
      columns: {item_ref: string, x: double, photo: string}
  columns:
    - {name: item_ref, from: items.item_ref, type: string, category: metadata, nullable: false}
    - {name: x, from: items.x, type: double, category: numeric}
    - {name: photo, from: items.photo, type: string, category: image}
labels: {label_type: brightness}
template:
  name: brightness
  prompt: "Reading {{ x }}."
  response_schema: {type: string, enum: [dark, bright]}
training:
  gate: {metric: macro_f1, minimum: 0.5}
"""


def _png(path: Path, level: int, seed: int) -> Path:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(seed).integers(-8, 9, (16, 16, 3))
    Image.fromarray(np.clip(level + noise, 0, 255).astype("uint8")).save(path)
    return path


@pytest.fixture(scope="module")
def image_served(tmp_path_factory):
    """A champion whose answer is the brightness of the `photo` image (the only signal in the data)."""
    import numpy as np
    import pandas as pd

    from ontos_pipeline.generate.template import compile_template
    from ontos_pipeline.specs import load_use_case

    root = tmp_path_factory.mktemp("image_serving")
    cases, pictures = root / "use_cases", root / "pictures"
    cases.mkdir()
    pictures.mkdir()
    (cases / "image_case.yaml").write_text(IMAGE_SPEC, encoding="utf-8")
    spec = load_use_case(cases / "image_case.yaml")
    rng = np.random.default_rng(4)

    def frame(n: int, offset: int) -> pd.DataFrame:
        bright = rng.random(n) < 0.5
        return pd.DataFrame(
            {
                "item_ref": [f"P{offset + i}" for i in range(n)],
                "x": rng.normal(0, 1, n).round(3),
                "photo": [str(_png(pictures / f"{offset + i}.png", 220 if b else 35, i)) for i, b in enumerate(bright)],
                RESPONSE: ["bright" if b else "dark" for b in bright],
            }
        )

    train, val = frame(120, 0), frame(40, 1000)
    outcome = LocalTrainer(seed=1).train(spec, compile_template(spec), TrainingData(train, val))
    store = local_store(root / "home")
    store.activate()
    with mlflow.start_run(experiment_id=store.experiment_id(spec.name)):
        example = train.drop(columns=[RESPONSE]).head(3)
        info = log_pyfunc(store, outcome.best.model, example, store.model_name(spec.name), number_types(spec))
    store.set_alias(spec.name, CHAMPION, str(info.registered_model_version))
    return {
        "settings": replace(make_settings(root / "home", cases), serve_image_roots=(root,)),  # its pictures
        "lakehouse": LocalLakehouse(root / "home" / "tables"),
        "bright": _png(root / "bright.png", 225, 7),
        "dark": _png(root / "dark.png", 30, 8),
        "root": root,
    }


def test_inline_images_are_answered_like_paths_kept_once_and_logged_by_reference(image_served):
    import base64
    import hashlib

    import pandas as pd

    from ontos_pipeline.monitor.monitoring import image_statistics

    served = image_served
    bright, dark = served["bright"], served["dark"]
    b64 = {name: base64.b64encode(path.read_bytes()).decode() for name, path in (("bright", bright), ("dark", dark))}
    records = [
        {"item_ref": "R0", "x": 0.1, "photo": str(bright)},
        {"item_ref": "R1", "x": 0.1, "photo": f"data:image/png;base64,{b64['bright']}"},
        {"item_ref": "R2", "x": 0.1, "photo": b64["bright"]},  # bare base64
        {"item_ref": "R3", "x": 0.1, "photo": str(dark)},
        {"item_ref": "R4", "x": 0.1, "photo": f"data:image/png;base64,{b64['dark']}"},
    ]
    with _server(served) as server:
        url = f"{server.url}/serving-endpoints/image_case/invocations"
        first = api_post(url, json={"dataframe_records": records}, timeout=30)
        again = api_post(url, json={"inputs": [records[2]]}, timeout=30)  # same content: kept once
    assert (first.status_code, again.status_code) == (200, 200), first.text
    answers = [p["response"] for p in first.json()["predictions"]]
    assert answers == ["bright"] * 3 + ["dark"] * 2  # the model saw the inline images themselves
    assert again.json()["predictions"][0]["response"] == "bright"

    kept_dir = served["settings"].home / "files" / "serving_images" / "image_case"
    kept = sorted(p for p in kept_dir.rglob("*") if p.is_file())
    digests = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in (("bright", bright), ("dark", dark))}
    assert [p.name for p in kept] == sorted(f"{d}.png" for d in digests.values())  # two images, one file each
    logged = _logged(served, [first.headers["x-request-id"], again.headers["x-request-id"]])
    inputs = json.loads(logged[first.headers["x-request-id"]]["inputs"])
    by_digest = {d: f"serving_images/image_case/{d[:2]}/{d}.png" for d in digests.values()}  # relative to files/
    assert [r["photo"] for r in inputs] == [
        str(bright),  # a path is logged as sent
        by_digest[digests["bright"]],
        by_digest[digests["bright"]],
        str(dark),
        by_digest[digests["dark"]],
    ]
    assert json.loads(logged[again.headers["x-request-id"]]["inputs"])[0]["photo"] == by_digest[digests["bright"]]
    with _server(served) as server:  # a kept image named by its relative cell is answered like the file itself
        relative = {"item_ref": "R5", "x": 0.1, "photo": by_digest[digests["dark"]]}
        answer = api_post(f"{server.url}/serving-endpoints/image_case/invocations", json={"inputs": [relative]})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["response"] == "dark"
    assert "base64" not in logged[first.headers["x-request-id"]]["inputs"]
    stats = image_statistics(pd.Series([r["photo"] for r in inputs]), str(kept_dir.parents[1])).to_dict("records")
    assert stats[0] == stats[1] == stats[2] != stats[3] == stats[4] and stats[0]["unreadable"] == "false"


def test_image_paths_outside_the_image_folders_fifos_and_escaping_symlinks_are_refused(image_served, tmp_path):
    """Defect: the server opened any path a request named (/etc/passwd) and a FIFO blocked a request thread for
    good. A path must resolve, symlinks followed, to a regular file under files/ or ONTOS_SERVE_IMAGE_ROOTS."""
    served = image_served
    fifo, escape = served["root"] / "pipe.png", served["root"] / "escape.png"
    os.mkfifo(fifo)
    escape.symlink_to("/etc/passwd")
    good = {"item_ref": "R0", "x": 0.5, "photo": str(served["bright"])}
    bodies = {
        "system file": {**good, "photo": "/etc/passwd"},
        "traversal": {**good, "photo": "../../../../../../etc/passwd"},
        "symlink out": {**good, "photo": str(escape)},
        "fifo": {**good, "photo": str(fifo)},
        "ok": good,
    }
    try:
        with _server(served) as server:
            url = f"{server.url}/serving-endpoints/image_case/invocations"
            answers = {k: api_post(url, json={"inputs": [b]}, timeout=10) for k, b in bodies.items()}
    finally:
        fifo.unlink()
        escape.unlink()
    assert {k: a.status_code for k, a in answers.items()} == {**dict.fromkeys(bodies, 400), "ok": 200}
    message = {k: a.json().get("message", "") for k, a in answers.items()}
    for case in ("system file", "traversal", "symlink out"):
        assert "is outside the folders this server reads images from" in message[case], message[case]
        assert "root:" not in message[case]  # nothing of the file's content or existence
    assert message["fifo"] == f"record 0: column 'photo': {str(fifo)!r} is not a regular file"


def test_bad_inline_or_missing_images_get_a_400_naming_record_and_column(image_served):
    import base64
    import hashlib

    served = image_served
    good = {"item_ref": "R0", "x": 0.5, "photo": str(served["bright"])}
    not_an_image = base64.b64encode(b"these bytes are no image at all, " * 4).decode()
    gone = served["root"] / "gone.png"
    fresh = _png(served["root"] / "fresh.png", 128, 9)  # sent only in refused requests
    bodies = {
        "bad base64": [good, {**good, "photo": "data:image/png;base64,@@not*base64@@"}],
        "not an image": [good, good, {**good, "photo": not_an_image}],
        "missing file": [{**good, "photo": str(gone)}],
        "too many rows": [{**good, "photo": base64.b64encode(fresh.read_bytes()).decode()}] * 1001,
    }
    with _server(served) as server:
        url = f"{server.url}/serving-endpoints/image_case/invocations"
        answers = {k: api_post(url, json={"dataframe_records": b}, timeout=30) for k, b in bodies.items()}
    assert {k: a.status_code for k, a in answers.items()} == {**dict.fromkeys(bodies, 400), "too many rows": 413}
    message = {k: a.json()["message"] for k, a in answers.items()}
    assert message["bad base64"].startswith("record 1: column 'photo': inline image content is not valid base64")
    assert message["not an image"].startswith("record 2: column 'photo': inline content is not a readable image")
    assert message["missing file"] == f"record 0: column 'photo': no image file at '{gone}' on the serving host"
    logged = _logged(served, [a.headers["x-request-id"] for a in answers.values()])
    inputs = json.loads(logged[answers["not an image"].headers["x-request-id"]]["inputs"])
    assert inputs[2]["photo"] == f"inline image ({len(not_an_image)} characters) not kept: the request was not answered"
    assert inputs[0]["photo"] == str(served["bright"])
    refused = logged[answers["too many rows"].headers["x-request-id"]]["inputs"]  # refused before validation
    assert len(json.loads(refused)) == 1001 and {r["photo"] for r in json.loads(refused)} == {
        f"inline image ({len(bodies['too many rows'][0]['photo'])} characters) not kept: the request was not answered"
    }
    kept = served["settings"].home / "files" / "serving_images" / "image_case"
    assert not list(kept.rglob(f"{hashlib.sha256(fresh.read_bytes()).hexdigest()}.*"))  # nothing kept when refused


def test_the_signature_types_number_columns_by_the_spec_not_by_the_example_rows():
    """An integer column with a null among the example rows is `long` (pandas made it float64), so a caller's int64
    values are accepted; a double column stays double; the example prefers rows whose integers are all set."""
    import numpy as np
    import pandas as pd

    from ontos_pipeline.specs import load_use_case
    from ontos_pipeline.train.tracking import example_rows, signature_of

    spec = load_use_case(Path("synthetic_data/use_cases/remaining_useful_life.yaml"))
    example = pd.DataFrame({"age_days": [np.nan, 12.0], "avg_load_pct": [50.0, 70.0], "asset_class": ["pump"] * 2})
    signature = signature_of(example, [{"response": 1.0, "confidence": 0.5}] * 2, number_types(spec))
    types = {c.name: c.type.name for c in signature.inputs.inputs}
    assert types == {"age_days": "long", "avg_load_pct": "double", "asset_class": "string"}
    chosen = example_rows(example, spec)
    assert chosen["age_days"].tolist() == [12] and chosen["age_days"].dtype == "int64"  # as the signature says
    assert example_rows(example.head(1), spec)["age_days"].isna().all()  # no complete row: the rows there are
