"""The serving API fuzzed from its own OpenAPI document (schemathesis): every route, generated bodies, headers and
path names, with and without a valid token. Nothing may answer 500; the run is bounded (examples per route, no
deadline) so it takes seconds. A real server on 127.0.0.1 over the test_serving registry (an enum model)."""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline_tests.conftest import AUTH
from ontos_pipeline_tests.test_serving import _server, served  # noqa: F401 - the module fixture: a registry

EXAMPLES = 30  # per route and mode (positive and negative data)


def test_no_request_generated_from_the_openapi_document_gets_a_500(served):  # noqa: F811
    statuses: Counter = Counter()
    with _server(served) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def call(case):
                path = case.operation.path
                for headers in (AUTH, {}):  # with a token: the routes themselves; without: the 401 path
                    response = case.call(base_url=server.url, headers=headers, timeout=30)
                    case.validate_response(response, checks=[not_a_server_error])
                    statuses[(path, bool(headers), response.status_code)] += 1
                    if not headers and path != "/health":
                        assert response.status_code == 401, (path, response.status_code)

            call()
    paths = {p for p, _, _ in statuses}
    assert {"/serving-endpoints/{name}/invocations", "/feedback", "/serving-endpoints", "/health"} <= paths
    assert all(status < 500 for _, _, status in statuses)
    authenticated = {status for (p, auth, status) in statuses if auth and p == "/serving-endpoints/{name}/invocations"}
    assert authenticated & {400, 404}, statuses  # the generated bodies reached the parser, not just the auth check
    logged = served["lakehouse"].records(INFERENCE_LOG, columns=["status_code"])
    assert {r["status_code"] for r in logged} <= {200, 400, 404, 413, 503}
