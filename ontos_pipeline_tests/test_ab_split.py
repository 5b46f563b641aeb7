"""A/B traffic split end to end on real components: the spec's `serving.ab_test`, `serving_endpoint` materialized
with Dagster against the local MLflow registry (split, then promotion, each told once on a local webhook), the real
serving process on 127.0.0.1 routing a stable share of requests to the `ab_challenger`, the inference log and
feedback attributed per version, monitoring's per-arm comparison, and the conclusions (promote, end, replace,
rollback) on logged rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from math import sqrt

import pytest
from dagster import DagsterInstance, StaticPartitionsDefinition, materialize

from ontos_pipeline.deploy import ab_test
from ontos_pipeline.deploy.assets import SERVING_ENDPOINT
from ontos_pipeline.deploy.endpoints import ab_comparison, conclude, deploy, history, rollback
from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
from ontos_pipeline.deploy.serving.registry import EndpointRegistry
from ontos_pipeline.deploy.serving.server import BackgroundServer, ServingOptions
from ontos_pipeline.monitor.assets import _ab_metadata
from ontos_pipeline.monitor.monitoring import REPORTS, MonitoringReport, Window, latest_report, monitor
from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.model_store import AB_CHALLENGER, CHALLENGER, CHAMPION
from ontos_pipeline.resources.base import NotifierResource, UseCasesResource
from ontos_pipeline.resources.local import (
    InProcessCompute,
    LocalLakehouseResource,
    LocalMlflowResource,
    LocalServingResource,
)
from ontos_pipeline.specs import AbTestSpec, SpecError, load_use_case
from ontos_pipeline_tests.conftest import make_settings
from ontos_pipeline_tests.kinds import registered_enum_versions
from ontos_pipeline_tests.test_notify import HttpReceiver, free_port
from ontos_pipeline_tests.test_serving import _port, _records, api_get, api_post

ENDPOINT = "enum_case"
PERCENT = 30
N = 200  # requests with the server's own ids
HOOK_ENV = "ONTOS_AB_TEST_HOOK_URL"
AB_YAML = f"""
serving:
  ab_test: {{challenger_percent: {PERCENT}, min_requests: 20, confidence: 0.95}}
notifications:
  events: [gate]
  webhook: {{url_env: {HOOK_ENV}}}
"""
RULES = [{"rule": "beats_baseline", "passed": True, "detail": "macro_f1 0.9 vs baseline 0.3", "numbers": {}}]


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    """The enum use case with `serving.ab_test` at 30%, three registered versions (v3: v1's model again, a newer
    challenger), champion v1."""
    root = tmp_path_factory.mktemp("ab_split")
    cases, home = root / "use_cases", root / "home"
    cases.mkdir()
    _, store, versions = registered_enum_versions(cases, home)
    path = cases / "enum.yaml"
    path.write_text(path.read_text(encoding="utf-8") + AB_YAML, encoding="utf-8")
    spec = load_use_case(path)
    client, name = store.client(), store.model_name(spec.name)
    first = client.get_model_version(name, versions[0])
    versions.append(str(client.create_model_version(name, first.source, first.run_id).version))
    return {"spec": spec, "store": store, "versions": versions, "home": home, "cases": cases, "path": path}


def _aliases(store, name: str) -> dict[str, str | None]:
    return {a: (v := store.version(name, a)) and str(v.version) for a in (CHAMPION, CHALLENGER, AB_CHALLENGER)}


def _evaluation(lh: LocalLakehouse, name: str, version: str) -> None:
    lh.append_records(
        tables.MODEL_EVALUATIONS,
        [
            {
                "evaluation_id": f"eval-{version}",
                "use_case": name,
                "model_name": f"ontos.workbench.{name}",
                "model_version": version,
                "metrics": "{}",
                "gate_passed": True,
                "gate_details": json.dumps(RULES),
                "created_at": datetime.now(UTC),
            }
        ],
    )


def _materialize_endpoint(ab, instance):
    resources = {
        "lakehouse": LocalLakehouseResource(home=str(ab["home"])),
        "use_cases": UseCasesResource(directory=str(ab["cases"])),
        "mlflow_store": LocalMlflowResource(home=str(ab["home"])),
        "serving": LocalServingResource(),
        "compute": InProcessCompute(),
        "notifier": NotifierResource(outbox_dir=str(ab["home"] / "outbox"), dagster_url="http://dagster.test"),
    }
    result = materialize(
        [SERVING_ENDPOINT.asset(StaticPartitionsDefinition([ab["spec"].name]))],
        resources=resources,
        instance=instance,
        partition_key=ab["spec"].name,
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("serving_endpoint")
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


@pytest.fixture(scope="module")
def traffic(ab):
    """champion v1, challenger v2 passed its gate: `serving_endpoint` starts the split; the server answers N
    requests (plus sticky and client-keyed ones), feedback rates every answer (challenger all up, champion half);
    `serving_endpoint` again concludes the test."""
    spec, store, (v1, v2, _) = ab["spec"], ab["store"], ab["versions"]
    lh = LocalLakehouse.under(ab["home"])
    store.set_alias(spec.name, CHAMPION, v1)
    store.set_alias(spec.name, CHALLENGER, v2)
    _evaluation(lh, spec.name, v2)
    hook = HttpReceiver(free_port()).start()
    instance = DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOOK_ENV, f"http://127.0.0.1:{hook.port}/hook")
        started = _materialize_endpoint(ab, instance)
        again = _materialize_endpoint(ab, instance)  # nothing logged yet: the test goes on, not told again
        told_at_start = len(hook.at("/hook"))
        window_start = datetime.now(UTC)
        answered, sticky, keyed = {}, [], {}
        with BackgroundServer(make_settings(ab["home"], ab["cases"]), ServingOptions(port=_port())) as server:
            url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
            listed = api_get(f"{server.url}/serving-endpoints").json()["endpoints"]
            for record in _records(N, seed=11):
                r = api_post(url, json={"dataframe_records": [record]})
                assert r.status_code == 200, r.text
                answered[r.headers["x-request-id"]] = r.headers["x-model-version"]
            for _ in range(6):  # one client id, retried: always the same arm
                r = api_post(url, json={"dataframe_records": _records(1)}, headers={"X-Request-Id": "retry-7"})
                sticky.append(r.headers["x-model-version"])
                answered[r.headers["x-request-id"]] = r.headers["x-model-version"]
            for i in range(20):
                r = api_post(url, json={"dataframe_records": _records(1)}, headers={"X-Request-Id": f"client-{i}"})
                keyed[f"client-{i}"] = r.headers["x-model-version"]
                answered[r.headers["x-request-id"]] = r.headers["x-model-version"]
            feedback = [
                {"request_id": rid, "rating": "up" if version == v2 or i % 2 else "down"}
                for i, (rid, version) in enumerate(answered.items())
            ]
            fb = api_post(f"{server.url}/feedback", json=feedback)
            assert fb.status_code == 201, fb.text
        window_end = datetime.now(UTC)
        concluded = _materialize_endpoint(ab, instance)
        hook.stop()
    return {
        "lakehouse": lh,
        "started": started,
        "again": again,
        "concluded": concluded,
        "told_at_start": told_at_start,
        "notices": hook.at("/hook"),
        "listed": listed,
        "answered": answered,
        "sticky": sticky,
        "keyed": keyed,
        "window": Window(window_start, window_end),
        "aliases": _aliases(store, spec.name),
        "history": history(lh, spec.name),
    }


def test_the_ab_test_section_is_optional_typed_and_named_in_errors(ab, tmp_path):
    assert ab["spec"].serving.ab_test == AbTestSpec(PERCENT, 20, 0.95)
    base = ab["path"].read_text(encoding="utf-8").replace(AB_YAML, "")
    path = tmp_path / "enum.yaml"
    path.write_text(base, encoding="utf-8")
    assert load_use_case(path).serving.ab_test == AbTestSpec() and not AbTestSpec().active  # off by default
    bad = {
        "challenger_percent: 100": "serving.ab_test.challenger_percent: expected an integer 1..99",
        "challenger_percent: -1": "serving.ab_test.challenger_percent: expected an integer 1..99",
        "challenger_percent: 12.5": "serving.ab_test.challenger_percent: expected an integer, got float",
        "challenger_percent: true": "serving.ab_test.challenger_percent: expected an integer, got a boolean",
        "min_requests: 0": "serving.ab_test.min_requests: expected at least 1 request per arm",
        "confidence: 1.5": "serving.ab_test.confidence: expected a confidence of at least 0.5 and below 1",
        "share: 10": "serving.ab_test.share: unknown field; expected one of challenger_percent, confidence,",
    }
    for line, message in bad.items():
        path.write_text(base + f"\nserving:\n  ab_test:\n    {line}\n", encoding="utf-8")
        with pytest.raises(SpecError) as caught:
            load_use_case(path)
        assert message in str(caught.value) and "enum.yaml" in str(caught.value), line


def test_a_passing_challenger_is_split_not_promoted_and_told_once(ab, traffic):
    v1, v2, _ = ab["versions"]
    started, again = traffic["started"], traffic["again"]
    assert (started["event"], started["served_version"], started["challenger_version"]) == ("split", v1, v2)
    assert (
        started["challenger_percent"] == PERCENT and f"version {v2} answers {PERCENT}% of requests" in started["reason"]
    )
    assert again["event"] == "split" and "goes on" in again["reason"] and again["ab_verdict"] == ab_test.TOO_FEW
    assert "too few requests" in again["ab_test"]  # the comparison table so far
    first, second, _ = traffic["history"]
    assert (first["event"], first["challenger_version"], first["challenger_percent"]) == ("split", v2, PERCENT)
    assert (second["event"], second["challenger_version"]) == ("split", v2)
    assert traffic["told_at_start"] == 1  # the split is told when it starts, not when it goes on
    notice = traffic["notices"][0]
    assert notice["data"]["decision"] == "split" and notice["data"]["challenger_version"] == v2
    assert (
        notice["title"]
        == f"enum_case: A/B test on {ENDPOINT}: version {v2} gets {PERCENT}% of requests next to version {v1}"
    )
    (listed,) = traffic["listed"]
    assert (listed["served_version"], listed["challenger_version"], listed["challenger_percent"]) == (v1, v2, PERCENT)


def test_the_challenger_answers_its_share_by_a_stable_hash_and_the_log_names_the_arm(ab, traffic):
    v1, v2, _ = ab["versions"]
    answered = traffic["answered"]
    own = list(answered.values())[:N]
    k = own.count(v2)
    assert set(own) == {v1, v2}
    assert abs(k - N * PERCENT / 100) <= 4 * sqrt(N * 0.3 * 0.7), k  # binomial: 4 standard deviations
    assert len(set(traffic["sticky"])) == 1  # the same client request id: the same arm, every time
    logged = {
        r["request_id"]: r
        for r in traffic["lakehouse"].records(INFERENCE_LOG, columns=["request_id", "model_version", "caller"])
    }
    assert {rid: logged[rid]["model_version"] for rid in answered} == answered  # the header is the logged version
    caller = next(iter(logged.values()))["caller"]
    for client_id, version in traffic["keyed"].items():  # routed by caller + the client's id, as documented
        assert version == (v2 if ab_test.routes_to_challenger(f"{caller}:{client_id}", PERCENT) else v1)
    assert {ab_test.route_bucket("x")} == {ab_test.route_bucket("x")} and 0 <= ab_test.route_bucket("y") < 100


def test_monitoring_reports_each_arm_and_the_verdict(ab, traffic, spark):
    v1, v2, _ = ab["versions"]
    spec, lh = ab["spec"], traffic["lakehouse"]
    report = monitor(spark, lh, spec, traffic["window"], None, "ab-run", champion=v1, challenger=v2)
    counts = {v: list(traffic["answered"].values()).count(v) for v in (v1, v2)}
    arms = {a["version"]: a for a in report.ab_test["arms"]}
    assert {v: a["requests"] for v, a in arms.items()} == counts and report.request_count == sum(counts.values())
    assert arms[v2]["rated"] == counts[v2] and arms[v2]["thumbs_up"] == counts[v2]  # feedback: the answering arm
    assert arms[v1]["rated"] == counts[v1] and 0.3 < arms[v1]["positive_rate"] < 0.7
    assert arms[v1]["errors"] == 0 and arms[v1]["latency_p95_ms"] > 0
    comparison = report.comparison
    assert (comparison.champion.version, comparison.challenger.version) == (v1, v2)
    assert comparison.verdict == ab_test.BETTER and 0 < comparison.low < comparison.difference < comparison.high
    lh.append_records(REPORTS, [report.record()])  # stored with the report, read back by the existing reader
    assert latest_report(lh, spec, "ab-run").comparison == comparison
    old = {k: v for k, v in report.record().items() if k != "ab_test"}  # a row from before the column
    assert MonitoringReport.from_record(old).ab_test is None
    meta = _ab_metadata(report)
    assert meta["ab_verdict"] == "better" and f"| challenger | {v2} | {counts[v2]} |" in meta["ab_test"].value


def test_the_next_deploy_promotes_a_better_arm_and_rollback_still_works(ab, traffic):
    v1, v2, _ = ab["versions"]
    concluded = traffic["concluded"]
    assert (concluded["event"], concluded["served_version"], concluded["previous_version"]) == ("deploy", v2, v1)
    assert concluded["reason"].startswith(f"A/B test promoted version {v2} over version {v1}: A/B better:")
    assert traffic["aliases"] == {CHAMPION: v2, CHALLENGER: v2, AB_CHALLENGER: None}
    assert [e["event"] for e in traffic["history"]] == ["split", "split", "deploy"]
    assert traffic["history"][-1]["challenger_percent"] == 0  # the test ended: one entity serves everything
    told = traffic["notices"][-1]
    assert len(traffic["notices"]) == 2 and told["data"]["decision"] == "deploy" and "A/B better" in told["text"]
    store, lh, name = ab["store"], traffic["lakehouse"], ab["spec"].name
    back = rollback(store, lh, name, ENDPOINT, "ann")  # the deploy event names the version served before
    assert (back.served_version, back.previous_version) == (v1, v2)


def test_a_worse_arm_is_ended_a_newer_challenger_replaces_the_arm_and_rollback_ends_a_test(ab, tmp_path):
    spec, store, (v1, v2, v3) = ab["spec"], ab["store"], ab["versions"]
    name, lh, spec_ab = spec.name, LocalLakehouse(tmp_path / "tables"), spec.serving.ab_test
    store.set_alias(name, CHAMPION, v1)
    store.set_alias(name, CHALLENGER, v2)
    store.delete_alias(name, AB_CHALLENGER)

    def go(actor: str):
        return deploy(store, lh, name, ENDPOINT, True, "PASS all", actor, spec_ab)

    split = go("run-1")
    assert (split.event, split.challenger_version, split.challenger_percent) == ("split", v2, PERCENT)
    assert go("run-2").event == "split"  # no requests yet: the split stays
    store.set_alias(name, CHALLENGER, v3)
    replaced = go("run-3")
    assert (replaced.event, replaced.challenger_version) == ("split", v3)
    assert f"replaces the arm under test, version {v2}" in replaced.reason
    assert _aliases(store, name)[AB_CHALLENGER] == v3

    at = datetime.now(UTC)  # after the split of v3 started
    rows, feedback = [], []
    for i in range(50):  # 25 requests per arm after the split started: the champion all up, the challenger down
        version = v1 if i % 2 else v3
        rows.append(
            {
                "request_id": f"q{i}",
                "request_time": at + timedelta(milliseconds=i),
                "endpoint_name": ENDPOINT,
                "model_version": version,
                "response": json.dumps([{"response": "low", "confidence": 0.9}]),
                "latency_ms": 10.0 + i,
                "status_code": 200,
            }
        )
        rating = "up" if version == v1 else "down"
        feedback.append(
            {
                "feedback_id": f"f{i}",
                "seq": i + 1,
                "use_case": name,
                "request_id": f"q{i}",
                "rating": rating,
                "status": "new",
                "created_at": at,
            }
        )
    lh.append_records(INFERENCE_LOG, rows)
    lh.append_records(tables.FEEDBACK, feedback)
    shown = ab_comparison(store, lh, name, ENDPOINT, spec_ab)
    assert shown.verdict == ab_test.WORSE and (shown.champion.requests, shown.challenger.requests) == (25, 25)
    assert shown.high < 0 and shown.challenger.positive_rate == 0 and shown.champion.positive_rate == 1

    ended = go("run-4")
    assert (ended.event, ended.served_version, ended.challenger_version, ended.challenger_percent) == (
        "keep",
        v1,
        v3,
        0,
    )
    assert ended.reason.startswith(f"A/B test ended: version {v1} stays, version {v3} gets no traffic: A/B worse")
    assert _aliases(store, name)[AB_CHALLENGER] is None and _aliases(store, name)[CHAMPION] == v1
    again = go("run-5")  # the lost arm is not tested again
    assert again.event == "keep" and "lost its A/B test" in again.reason and not again.split

    store.set_alias(name, CHALLENGER, v2)  # v2 was replaced, not judged: tested again
    assert go("run-6").challenger_version == v2
    back = rollback(store, lh, name, ENDPOINT, "ann", to_version=v3)
    assert (back.event, back.served_version, back.challenger_version, back.challenger_percent) == (
        "rollback",
        v3,
        v2,
        0,
    )
    assert f"the A/B test of version {v2} ended" in back.reason and _aliases(store, name)[AB_CHALLENGER] is None

    store.set_alias(name, CHALLENGER, v1)  # by hand: promote the arm whatever the verdict
    assert go("run-7").event == "split"
    promoted = conclude(store, lh, name, ENDPOINT, spec_ab, "ann", "promote")
    assert (promoted.event, promoted.served_version, promoted.previous_version) == ("deploy", v1, v3)
    assert "by ann" in promoted.reason and "too few requests" in promoted.reason

    store.set_alias(name, CHALLENGER, v2)  # percent 0: a passing challenger is promoted at once, as before
    plain = deploy(store, lh, name, ENDPOINT, True, "PASS all", "run-8", AbTestSpec())
    assert (plain.event, plain.served_version, plain.challenger_version) == ("deploy", v2, None)
    assert [e["event"] for e in history(lh, name)] == [
        *("split", "split", "split", "keep", "keep", "split", "rollback", "split", "deploy", "deploy")
    ]


def test_the_registry_loads_both_arms_before_swapping_and_reuses_the_arm_it_promotes(ab):
    spec, store, (v1, v2, _) = ab["spec"], ab["store"], ab["versions"]
    loads = []

    def loader(uri: str):
        loads.append(uri.rsplit("/", 1)[-1])
        return store.load(uri)

    store.set_alias(spec.name, CHAMPION, v1)
    store.set_alias(spec.name, AB_CHALLENGER, v2)
    registry = EndpointRegistry(store, {spec.name: spec}, loader=loader)
    assert registry.refresh() == [ENDPOINT] and sorted(loads) == sorted([v1, v2])
    (described,) = registry.describe()
    assert (described["served_version"], described["challenger_version"], described["challenger_percent"]) == (
        v1,
        v2,
        PERCENT,
    )
    key = next(f"k{i}" for i in range(1000) if ab_test.routes_to_challenger(f"k{i}", PERCENT))
    assert registry.acquire(ENDPOINT, key)[0].version == v2 and registry.acquire(ENDPOINT)[0].version == v1
    assert registry.refresh() == []  # nothing moved
    store.set_alias(spec.name, CHAMPION, v2)  # promoted: the loaded arm becomes the champion, no second load
    store.delete_alias(spec.name, AB_CHALLENGER)
    assert registry.refresh() == [ENDPOINT] and len(loads) == 2
    assert registry.split(ENDPOINT) is None and registry.acquire(ENDPOINT, key)[0].version == v2
    store.set_alias(spec.name, CHAMPION, v1)


def test_ontos_endpoint_ab_shows_the_comparison_and_ends_the_test(ab, traffic, monkeypatch, capsys):
    from ontos_pipeline.cli import main

    spec, store, (v1, v2, _) = ab["spec"], ab["store"], ab["versions"]
    monkeypatch.setenv("ONTOS_HOME", str(ab["home"]))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(ab["cases"]))
    store.set_alias(spec.name, CHAMPION, v1)
    store.delete_alias(spec.name, AB_CHALLENGER)
    assert main(["endpoint", "ab", spec.name]) == 0 and "runs no A/B test" in capsys.readouterr().out
    store.set_alias(spec.name, AB_CHALLENGER, v2)  # the arm of the traffic above, against champion v1
    assert main(["endpoint", "ab", spec.name, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\nA/B ")[0])
    assert shown["verdict"] == "better" and shown["challenger"]["version"] == v2
    assert main(["endpoint", "ab", spec.name, "--end", "--by", "rita"]) == 0
    out = capsys.readouterr().out
    assert f"keep: A/B test ended by rita: version {v1} stays" in out
    assert _aliases(store, spec.name)[AB_CHALLENGER] is None
    assert main(["endpoint", "history", spec.name]) == 0
    assert f"{v2} (0%)" in capsys.readouterr().out  # the arm column of the events


def test_an_endpoint_table_from_before_the_arm_columns_takes_split_events(ab, tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    spec, store, (v1, v2, _) = ab["spec"], ab["store"], ab["versions"]
    lh = LocalLakehouse(tmp_path / "tables")
    old = [c for c in lh.ddl(tables.SERVING_ENDPOINTS).arrow_schema() if not c.name.startswith("challenger_")]
    row = {"event_id": "e0", "endpoint_name": ENDPOINT, "use_case": spec.name, "event": "deploy"}
    row |= {"served_version": v1, "previous_version": None, "reason": "gate passed", "actor": "run-0"}
    row |= {"created_at": datetime.now(UTC) - timedelta(days=1)}
    write_deltalake(str(lh.path(tables.SERVING_ENDPOINTS)), pa.Table.from_pylist([row], schema=pa.schema(old)))
    store.set_alias(spec.name, CHAMPION, v1)
    store.set_alias(spec.name, CHALLENGER, v2)
    store.delete_alias(spec.name, AB_CHALLENGER)
    event = deploy(store, lh, spec.name, ENDPOINT, True, "PASS all", "run-1", spec.serving.ab_test)
    assert [(e["event"], e["challenger_version"]) for e in history(lh, spec.name)] == [("deploy", None), ("split", v2)]
    assert event.split and rollback(store, lh, spec.name, ENDPOINT, "ann", to_version=v2).challenger_percent == 0
    store.set_alias(spec.name, CHAMPION, v1)
