"""Guardrails on an endpoint (`serving.guardrails`), against a real uvicorn server serving a registered MLflow model:
PII in requests redacted or refused, PII in answers refused or masked, invalid answers withheld, low-confidence
answers turned into abstains queued for review exactly once, and a per-caller rate limit. Every decision is in the
inference log's `guardrails` column, never the PII itself.

The served model is the real one, steered by a marker in the record's `note` (what the test wants it to say), and
records the frames it was given (what the model saw)."""

from __future__ import annotations

import json
import time

import pytest

from ontos_pipeline.deploy.serving.guardrails import RateLimiter, queue_for_review
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.model_store import ModelStore
from ontos_pipeline.platform.phi import scan
from ontos_pipeline.specs import RateLimitSpec, SpecError, load_use_case
from ontos_pipeline_tests.conftest import make_settings
from ontos_pipeline_tests.kinds import registered_enum_versions
from ontos_pipeline_tests.test_serving import ENDPOINT, _logged, _records, _server, api_get, api_post

EMAIL, SSN, PHONE = "jane.roe@example.org", "987-65-4321", "555-867-5309"
NOTE_LINE = "- {name: note, from: items.note, type: string, category: text}"
SEEN: list = []  # the frames the served model was given, in order


class Steered:
    """The real model; a note with LOWCONF answers with confidence 0.01, BADANSWER an answer outside the enum,
    LEAKY an answer carrying a phone number."""

    def __init__(self, model):
        self.model = model

    @property
    def input_columns(self) -> list[str]:
        return self.model.input_columns

    def answer(self, frame):
        SEEN.append(frame.copy())
        answers, prompts = self.model.answer(frame)
        for answer, note in zip(answers, frame["note"], strict=True):
            if "LOWCONF" in note:
                answer["confidence"] = 0.01
            if "BADANSWER" in note:
                answer["response"] = "very high"
            if "LEAKY" in note:
                answer["response"] = f"call {PHONE}"
        return answers, prompts


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("guardrails")
    cases = root / "use_cases"
    cases.mkdir()
    spec, _, _ = registered_enum_versions(cases, root / "home")
    path = cases / "enum.yaml"
    return {
        "settings": make_settings(root / "home", cases),
        "spec": spec,
        "path": path,
        "yaml": path.read_text(encoding="utf-8"),
        "lakehouse": LocalLakehouse(root / "home" / "tables", files_root=root / "home" / "files"),
    }


@pytest.fixture
def guarded(trained, monkeypatch):
    """`guarded(serving_yaml, phi=False)`: the enum use case with that `serving:` section (the note column tagged
    PHI when `phi`), served by the steered model."""
    original = ModelStore.load
    monkeypatch.setattr(ModelStore, "load", lambda self, uri: Steered(original(self, uri)))
    SEEN.clear()

    def configure(serving: str, phi: bool = False) -> dict:
        text = trained["yaml"]
        if phi:
            assert NOTE_LINE in text
            text = text.replace(NOTE_LINE, NOTE_LINE[:-1] + ", tags: [phi]}")
        trained["path"].write_text(text + "\n" + serving, encoding="utf-8")
        return trained

    yield configure
    trained["path"].write_text(trained["yaml"], encoding="utf-8")


def _url(server) -> str:
    return f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"


def _no_pii(row: dict) -> None:
    text = json.dumps(row, default=str)
    assert EMAIL not in text and SSN not in text and PHONE not in text


def _decisions(row: dict) -> list[dict]:
    return json.loads(row["guardrails"]) if row["guardrails"] else []


def test_the_guardrails_section_is_optional_typed_and_named_in_errors(trained, tmp_path):
    assert trained["spec"].serving.guardrails.active is False  # existing specs load unchanged
    path = tmp_path / "enum.yaml"
    base = trained["yaml"]
    path.write_text(
        base + "\nserving:\n  guardrails:\n    pii: {inputs: redact}\n    rate_limit: {requests_per_minute: 600}\n"
    )
    g = load_use_case(path).serving.guardrails
    assert (g.pii.inputs, g.pii.outputs, g.rate_limit) == ("redact", "off", RateLimitSpec(600, 60))
    bad = {
        "pii: {inputs: mask}": "serving.guardrails.pii.inputs: unknown value 'mask'; expected one of off, redact,",
        "confidence_floor: 1.5": "serving.guardrails.confidence_floor: expected a confidence above 0 and at most 1",
        "rate_limit: {requests_per_minute: 0}": "serving.guardrails.rate_limit.requests_per_minute: expected at least",
        "rate_limit: {requests_per_minute: 60, burst: x}": "serving.guardrails.rate_limit.burst: expected an integer",
        "enforce_response_schema: yes please": "serving.guardrails.enforce_response_schema: expected true or false",
        "profanity: true": "serving.guardrails.profanity: unknown field; expected one of confidence_floor,",
    }
    for line, message in bad.items():
        path.write_text(base + f"\nserving:\n  guardrails:\n    {line}\n")
        with pytest.raises(SpecError) as caught:
            load_use_case(path)
        assert message in str(caught.value), line


def test_pii_in_a_request_is_redacted_before_the_model_sees_it(guarded):
    served = guarded("serving:\n  log_phi: mask\n  guardrails:\n    pii: {inputs: redact}\n", phi=True)
    record = {**_records(1)[0], "note": f"Call back at {EMAIL}, SSN {SSN}."}
    with _server(served) as server:
        r = api_post(_url(server), json={"dataframe_records": [record]}, timeout=30)
        health = api_get(f"{server.url}/health", timeout=30).json()
    assert r.status_code == 200 and "response" in r.json()["predictions"][0]
    assert SEEN[-1]["note"].tolist() == ["Call back at [EMAIL], SSN [SSN]."]  # what the model saw
    row = _logged(served, [r.headers["x-request-id"]])[r.headers["x-request-id"]]
    _no_pii(row)
    assert json.loads(row["inputs"])[0]["note"] == "Call back at [EMAIL], SSN [SSN]."
    assert _decisions(row) == [
        {
            "rule": "pii",
            "stage": "inputs",
            "action": "redact",
            "column": "note",
            "records": 1,
            "counts": {"email": 1, "ssn": 1},
        }
    ]
    assert health["guardrails"]["decisions"] == {"pii.inputs.redact": 1}


def test_pii_in_a_request_is_refused_naming_rule_and_column_not_the_value(guarded):
    served = guarded("serving:\n  guardrails:\n    pii: {inputs: refuse}\n", phi=True)
    records = _records(2)
    records[1]["note"] = f"Patient SSN {SSN}"
    with _server(served) as server:
        refused = api_post(_url(server), json={"dataframe_records": records}, timeout=30)
        clean = api_post(_url(server), json={"dataframe_records": records[:1]}, timeout=30)
    assert refused.status_code == 400 and clean.status_code == 200
    body = refused.json()
    assert body["error_code"] == "GUARDRAIL_REFUSED" and "predictions" not in body
    assert body["guardrail"] == {"rule": "pii", "stage": "inputs", "columns": ["note"], "kinds": ["ssn"]}
    assert "column 'note' holds an SSN" in body["message"] and SSN not in refused.text
    assert len(SEEN) == 1  # the refused request never reached the model
    rows = _logged(served, [refused.headers["x-request-id"], clean.headers["x-request-id"]])
    row = rows[refused.headers["x-request-id"]]
    _no_pii(row)
    assert row["status_code"] == 400 and row["response"] is None
    assert _decisions(row) == [
        {"rule": "pii", "stage": "inputs", "action": "refuse", "column": "note", "records": 1, "counts": {"ssn": 1}}
    ]
    assert rows[clean.headers["x-request-id"]]["guardrails"] is None  # nothing found, nothing decided


def test_pii_in_an_answer_is_refused_or_masked_as_declared(guarded):
    record = {**_records(1)[0], "note": "LEAKY"}
    served = guarded("serving:\n  guardrails:\n    pii: {outputs: refuse}\n")
    with _server(served) as server:
        refused = api_post(_url(server), json={"dataframe_records": [record]}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error_code"] == "GUARDRAIL_REFUSED"
    assert refused.json()["guardrail"] == {"rule": "pii", "stage": "outputs", "record": 0, "fields": ["response"]}
    assert PHONE not in refused.text
    row = _logged(served, [refused.headers["x-request-id"]])[refused.headers["x-request-id"]]
    _no_pii(row)
    assert _decisions(row)[0] | {"counts": None} == {
        "rule": "pii",
        "stage": "outputs",
        "action": "refuse",
        "field": "response",
        "records": 1,
        "counts": None,
    }

    served = guarded("serving:\n  guardrails:\n    pii: {outputs: redact}\n")
    with _server(served) as server:
        masked = api_post(_url(server), json={"dataframe_records": [record]}, timeout=30)
    assert masked.status_code == 200 and masked.json()["predictions"][0]["response"] == "call [PHONE]"
    row = _logged(served, [masked.headers["x-request-id"]])[masked.headers["x-request-id"]]
    _no_pii(row)
    assert json.loads(row["response"])[0]["response"] == "call [PHONE]"
    assert [(d["rule"], d["stage"], d["action"], d["counts"]) for d in _decisions(row)] == [
        ("pii", "outputs", "redact", {"phone": 1})
    ]


def test_an_answer_that_does_not_validate_is_not_returned(guarded):
    served = guarded("serving:\n  guardrails:\n    enforce_response_schema: true\n")
    records = _records(2)
    with _server(served) as server:
        ok = api_post(_url(server), json={"dataframe_records": records}, timeout=30)
        records[1]["note"] = "BADANSWER"
        bad = api_post(_url(server), json={"dataframe_records": records}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    assert bad.status_code == 400 and "predictions" not in bad.json() and "very high" not in bad.text
    assert bad.json()["guardrail"] == {"rule": "response_schema", "record": 1, "field": "response", "check": "enum"}
    rows = _logged(served, [ok.headers["x-request-id"], bad.headers["x-request-id"]])
    row = rows[bad.headers["x-request-id"]]
    assert row["status_code"] == 400 and row["response"] is None
    assert _decisions(row) == [
        {"rule": "response_schema", "action": "refuse", "field": "response", "check": "enum", "records": 1}
    ]
    assert rows[ok.headers["x-request-id"]]["guardrails"] is None


def test_a_low_confidence_answer_abstains_and_its_item_is_queued_for_review_once(guarded):
    served = guarded("serving:\n  guardrails:\n    confidence_floor: 0.3\n")
    lakehouse = served["lakehouse"]
    records = _records(2, seed=11)
    low = {**records[0], "note": "LOWCONF"}
    with _server(served) as server:
        first = api_post(_url(server), json={"dataframe_records": [low, records[1]]}, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not lakehouse.records(tables.ANNOTATION_TASKS):
            time.sleep(0.2)  # committed by the queue's thread, off the event loop
        again = api_post(_url(server), json={"dataframe_records": [low]}, timeout=30)  # the same item again
        health = api_get(f"{server.url}/health", timeout=30).json()
    assert first.status_code == 200 and again.status_code == 200
    abstain, answer = first.json()["predictions"]
    assert abstain == {
        "abstain": True,
        "response": None,
        "confidence": 0.01,
        "reason": "low confidence",
        "review": "queued",
    }
    assert "abstain" not in answer and answer["response"] in ("low", "mid", "high")
    tasks = [t for t in lakehouse.records(tables.ANNOTATION_TASKS) if t["use_case"] == served["spec"].name]
    assert len(tasks) == 1, tasks  # the second abstain of the item did not queue it again
    (task,) = tasks
    assert task["item_refs"] == [low["item_ref"]] and task["status"] == "pending"
    assert task["gap_id"] == f"low_confidence:{served['spec'].name}"
    assert "low confidence" in task["instructions"] and first.headers["x-request-id"] in task["instructions"]
    assert health["guardrails"]["review_queue"]["items"] >= 1 and health["guardrails"]["review_queue"]["tasks"] == 1
    row = _logged(served, [first.headers["x-request-id"]])[first.headers["x-request-id"]]
    assert _decisions(row) == [{"rule": "confidence_floor", "action": "abstain", "records": 1, "floor": 0.3}]
    assert json.loads(row["response"])[0]["abstain"] is True
    # committing the same items again (a recovered spool) queues nothing
    item = {"use_case": served["spec"].name, "endpoint": ENDPOINT, "item_ref": low["item_ref"]}
    assert queue_for_review(lakehouse, [{**item, "request_id": "x", "confidence": 0.01, "floor": 0.3}]) == []


def test_the_rate_limit_answers_429_after_the_burst_for_one_caller_only(guarded):
    from ontos_pipeline.deploy.serving.auth import TokenStore

    served = guarded("serving:\n  guardrails:\n    rate_limit: {requests_per_minute: 6, burst: 2}\n")
    other = TokenStore(served["settings"].home).create("other-app", replace=True)
    body = {"dataframe_records": _records(1)}
    with _server(served) as server:
        mine = [api_post(_url(server), json=body, timeout=30) for _ in range(3)]
        theirs = api_post(_url(server), json=body, headers={"Authorization": f"Bearer {other}"}, timeout=30)
        health = api_get(f"{server.url}/health", timeout=30).json()
    assert [r.status_code for r in mine] == [200, 200, 429] and theirs.status_code == 200
    limited = mine[-1]
    assert limited.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED" and 1 <= int(limited.headers["retry-after"]) <= 10
    assert health["guardrails"]["rate_limited"] == {ENDPOINT: 1}
    row = _logged(served, [limited.headers["x-request-id"]])[limited.headers["x-request-id"]]
    assert row["status_code"] == 429 and [d["rule"] for d in _decisions(row)] == ["rate_limit"]


def test_the_token_bucket_refills_at_the_declared_rate():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limit = RateLimitSpec(requests_per_minute=60, burst=2)
    assert [limiter.take("e", "a", limit) for _ in range(2)] == [None, None]
    assert limiter.take("e", "a", limit) == pytest.approx(1.0)
    now[0] = 0.5
    assert limiter.take("e", "a", limit) == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.take("e", "a", limit) is None and limiter.take("e", "b", limit) is None
    assert limiter.limited == {"e": 2}


def test_phi_scan_counts_kinds_without_keeping_the_text():
    text, counts = scan(f"mail {EMAIL}, ssn {SSN}, phone {PHONE}, DOB: 1980-02-03, invoice 2024-05-06")
    assert counts == {"email": 1, "phone": 1, "ssn": 1, "date_of_birth": 1}
    assert text == "mail [EMAIL], ssn [SSN], phone [PHONE], [DATE_OF_BIRTH], invoice 2024-05-06"
