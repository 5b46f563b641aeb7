"""Notifications against real receivers on 127.0.0.1: an HTTP server (Slack's incoming webhook and the generic JSON
webhook) and an SMTP server (aiosmtpd, with login). Real Dagster runs: a failing run told by the run-failure sensor,
`serving_endpoint` keeping its champion, a receiver that is down, and no secret in any log line, event or file.
No Spark: the steps used here read and write Delta tables with delta-rs only."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from dagster import (
    DagsterEventType,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)

from ontos_pipeline.definitions import build_definitions
from ontos_pipeline.deploy.assets import SERVING_ENDPOINT
from ontos_pipeline.monitor.alerts import Breach, raise_alerts
from ontos_pipeline.notify.messages import Notice, alerts_notice, asset_url, run_url, slack_payload
from ontos_pipeline.notify.notifier import Notifier
from ontos_pipeline.notify.outbox import DELIVERED, PENDING, Outbox
from ontos_pipeline.notify.sensors import RETRY_SENSOR, RUN_FAILURE_SENSOR
from ontos_pipeline.platform import tables
from ontos_pipeline.resources.base import ModelStoreResource, NotifierResource, UseCasesResource
from ontos_pipeline.resources.local import InProcessCompute, LocalLakehouseResource, LocalServingResource
from ontos_pipeline.settings import Settings, SettingsError, load_settings
from ontos_pipeline.specs import SpecError, load_use_case, load_use_cases
from ontos_pipeline_tests.conftest import WIDGETS_SPEC

SLACK_TOKEN = "xoxSLACKsecret0123456789abcdef"  # the secret part of an incoming-webhook URL
HOOK_TOKEN = "hooksecret-9f8e7d6c5b4a"
SMTP_USER, SMTP_PASSWORD = "ontos-mailer", "smtp-pa55word-do-not-log"
SECRETS = (SLACK_TOKEN, HOOK_TOKEN, SMTP_PASSWORD)
DAGSTER_URL = "http://dagster.example:3000"
NOTIFICATIONS = {
    "events": ["run_failure", "gate", "alert", "tasks"],
    "slack": {"webhook_url_env": "ONTOS_SLACK_WEBHOOK_URL"},
    "email": {"to": ["ml-team@example.com"], "from": "ontos@example.com", "tls": "none"},
    "webhook": {"url_env": "ONTOS_NOTIFY_WEBHOOK_URL"},
}


# -- receivers ----------------------------------------------------------------------------------------------------
@dataclass
class HttpReceiver:
    """POSTs by path; answers `ok` (what Slack answers), or 503 while `failures` > 0."""

    port: int
    posts: list[tuple[str, dict]] = field(default_factory=list)
    failures: int = 0
    server: ThreadingHTTPServer | None = None

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.posts.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def at(self, prefix: str) -> list[dict]:
        return [body for path, body in self.posts if path.startswith(prefix)]


class MailBox:
    def __init__(self):
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode())
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http():
    receiver = HttpReceiver(free_port()).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp():
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        return AuthResult(success=ok)

    box = MailBox()
    controller = Controller(
        box, hostname="127.0.0.1", port=free_port(), authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@pytest.fixture
def channels_env(monkeypatch, http, smtp):
    """The channels' secrets, in the environment only."""
    monkeypatch.setenv("ONTOS_SLACK_WEBHOOK_URL", f"http://127.0.0.1:{http.port}/services/T0/B0/{SLACK_TOKEN}")
    monkeypatch.setenv("ONTOS_NOTIFY_WEBHOOK_URL", f"http://127.0.0.1:{http.port}/hook?token={HOOK_TOKEN}")
    monkeypatch.setenv("ONTOS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("ONTOS_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("ONTOS_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("ONTOS_SMTP_PASSWORD", SMTP_PASSWORD)


@pytest.fixture
def use_cases_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "use_cases"
    folder.mkdir()
    raw = yaml.safe_load(WIDGETS_SPEC)
    raw["notifications"] = NOTIFICATIONS
    (folder / "widgets.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder


@pytest.fixture
def settings(home, use_cases_dir) -> Settings:
    return Settings("local", home, "ontos", "workbench", use_cases_dir, dagster_url=DAGSTER_URL)


def counts(http: HttpReceiver, smtp: MailBox) -> tuple[int, int, int]:
    return len(http.at("/services/")), len(http.at("/hook")), len(smtp.messages)


def assert_no_secret(texts) -> None:
    leaks = [(secret, text[:200]) for text in texts for secret in SECRETS if secret in text]
    assert leaks == []


def run_texts(instance: DagsterInstance, run_id: str) -> list[str]:
    """Every event of a run as stored (messages, metadata, resource config of the run)."""
    texts = [repr(e) for e in instance.all_logs(run_id)]
    run = instance.get_run_by_id(run_id)
    return [*texts, repr(run.run_config), repr(run.tags)]


# -- specs --------------------------------------------------------------------------------------------------------
def write_spec(tmp_path: Path, notifications: object) -> Path:
    raw = yaml.safe_load(WIDGETS_SPEC)
    raw["notifications"] = notifications
    path = tmp_path / "widgets.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_the_notifications_section_names_environment_variables_and_refuses_secrets(tmp_path, use_cases_dir):
    spec = load_use_cases(use_cases_dir)["widgets"].notifications
    assert spec.events == ("run_failure", "gate", "alert", "tasks")
    assert spec.slack.webhook_url_env == "ONTOS_SLACK_WEBHOOK_URL"
    assert spec.email.to == ("ml-team@example.com",) and spec.email.smtp_password_env == "ONTOS_SMTP_PASSWORD"
    assert load_use_case(write_spec(tmp_path, {"slack": {}})).notifications.events[0] == "run_failure"
    plain = yaml.safe_load(WIDGETS_SPEC)
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain), encoding="utf-8")
    assert load_use_case(tmp_path / "plain.yaml").notifications.channels == []  # no section: nobody is told

    url = f"https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}"
    with pytest.raises(SpecError, match=r"notifications\.slack\.webhook_url: secrets are not written") as err:
        load_use_case(write_spec(tmp_path, {"slack": {"webhook_url": url}}))
    assert SLACK_TOKEN not in str(err.value)
    with pytest.raises(SpecError, match=r"notifications\.email\.smtp_password: secrets") as err:
        load_use_case(write_spec(tmp_path, {"email": {"to": "a@b.c", "from": "o@b.c", "smtp_password": "x"}}))
    with pytest.raises(SpecError, match=r"notifications\.webhook\.url_env: expected the name of an environ") as err:
        load_use_case(write_spec(tmp_path, {"webhook": {"url_env": f"https://x.example/{HOOK_TOKEN}"}}))
    assert HOOK_TOKEN not in str(err.value)
    with pytest.raises(SpecError, match=r"notifications\.events\[1\]: unknown event 'deploys'"):
        load_use_case(write_spec(tmp_path, {"events": ["gate", "deploys"]}))
    with pytest.raises(SpecError, match=r"notifications\.email\.to\[0\]: 'team' is not an e-mail address"):
        load_use_case(write_spec(tmp_path, {"email": {"to": ["team"], "from": "o@b.c"}}))
    assert load_settings({"ONTOS_DAGSTER_URL": "https://dagster.acme.io/"}).dagster_url == "https://dagster.acme.io"
    with pytest.raises(SettingsError, match="ONTOS_DAGSTER_URL"):
        load_settings({"ONTOS_DAGSTER_URL": "dagster.acme.io"})


def test_links_and_the_slack_payload_follow_dagster_and_slack_conventions():
    assert run_url(DAGSTER_URL, "abc-123") == f"{DAGSTER_URL}/runs/abc-123"
    assert asset_url(DAGSTER_URL, "serving_endpoint", "defect_detection") == (
        f"{DAGSTER_URL}/assets/serving_endpoint?view=partitions&partition=defect_detection"
    )
    notice = Notice(
        "k", "gate", "uc: kept <v1>", "a & b", (("View run", f"{DAGSTER_URL}/runs/r"),), facts=(("x", "1"),)
    )
    payload = slack_payload(notice)
    assert payload["text"].startswith("uc: kept &lt;v1&gt;") and f"<{DAGSTER_URL}/runs/r|View run>" in payload["text"]
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds == ["header", "section", "section", "actions"]
    assert "a &amp; b" in payload["blocks"][1]["text"]["text"]
    assert payload["blocks"][3]["elements"][0]["url"] == f"{DAGSTER_URL}/runs/r"


# -- run failures -------------------------------------------------------------------------------------------------
def test_a_failed_run_is_told_once_on_each_channel_with_job_partition_step_error_and_link(
    settings, channels_env, http, smtp, caplog
):
    caplog.set_level(logging.DEBUG)
    partitions = StaticPartitionsDefinition(["widgets"])

    @asset(name="sheet_fails", partitions_def=partitions)
    def sheet_fails(context):
        raise ValueError("source table factory.widgets has no rows")

    instance = DagsterInstance.ephemeral()
    result = materialize([sheet_fails], instance=instance, partition_key="widgets", raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(
        e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event_type == DagsterEventType.RUN_FAILURE
    )
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def(RUN_FAILURE_SENSOR)
    resources = {"notifier": defs.resources["notifier"], "use_cases": defs.resources["use_cases"]}
    for _ in range(2):  # the sensor seeing the same run again (a restart) tells nobody twice
        context = build_run_status_sensor_context(
            RUN_FAILURE_SENSOR, failure, instance, run, resources=resources
        ).for_run_failure()
        sensor(context)
    assert counts(http, smtp) == (1, 1, 1)
    hook = http.at("/hook")[0]
    assert hook["event"] == "run_failure" and hook["url"] == f"{DAGSTER_URL}/runs/{run.run_id}"
    assert hook["data"]["partition"] == "widgets" and hook["data"]["job"] == run.job_name
    assert hook["data"]["failed_steps"][0]["step"] == "sheet_fails"
    assert "source table factory.widgets has no rows" in hook["data"]["failed_steps"][0]["error"]
    slack = http.at("/services/")[0]
    assert "Run failed" in slack["text"] and slack["blocks"][0]["type"] == "header"
    assert "sheet_fails" in json.dumps(slack["blocks"]) and f"/runs/{run.run_id}" in json.dumps(slack["blocks"])
    assert "Subject: [Ontos] Run failed" in smtp.messages[0] and "no rows" in smtp.messages[0]
    assert_no_secret([r.getMessage() for r in caplog.records] + [repr(defs.resources)])


# -- gate decisions -----------------------------------------------------------------------------------------------
class AliasStore:
    """The model store's aliases (what serving_endpoint reads and moves), without MLflow."""

    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases

    def version(self, use_case, alias):
        return SimpleNamespace(version=self.aliases[alias]) if alias in self.aliases else None

    def set_alias(self, use_case, alias, version):
        self.aliases[alias] = str(version)


class AliasStoreResource(ModelStoreResource):
    champion: str = "1"
    challenger: str = "2"

    def get(self):
        return AliasStore({"champion": self.champion, "challenger": self.challenger})


RULES = [
    {"rule": "beats_baseline", "passed": True, "detail": "accuracy 0.4100 vs baseline 0.3300", "numbers": {}},
    {
        "rule": "meets_minimum",
        "passed": False,
        "detail": "accuracy 0.4100 >= 0.6 required",
        "numbers": {"challenger": 0.41, "minimum": 0.6},
    },
]


def store_evaluation(home: Path, version: str, passed: bool) -> None:
    lh = LocalLakehouseResource(home=str(home)).get()
    row = {
        "evaluation_id": f"eval-{version}",
        "use_case": "widgets",
        "model_name": "ontos.workbench.widgets",
        "model_version": version,
        "champion_version": "1",
        "metrics": "{}",
        "gate_passed": passed,
        "gate_details": json.dumps(RULES),
        "mlflow_run_id": None,
        "dagster_run_id": None,
        "created_at": datetime.now(UTC),
    }
    lh.append_records(tables.MODEL_EVALUATIONS, [row])


def materialize_endpoint(settings: Settings, instance: DagsterInstance):
    partitions = StaticPartitionsDefinition(["widgets"])
    resources = {
        "lakehouse": LocalLakehouseResource(home=str(settings.home)),
        "use_cases": UseCasesResource(directory=str(settings.use_cases_dir)),
        "mlflow_store": AliasStoreResource(),
        "serving": LocalServingResource(),
        "compute": InProcessCompute(),
        "notifier": build_definitions(settings).resources["notifier"],
    }
    return materialize(
        [SERVING_ENDPOINT.asset(partitions)], resources=resources, instance=instance, partition_key="widgets"
    )


def test_a_kept_champion_is_told_once_with_the_reason_and_the_gate_numbers(settings, channels_env, http, smtp):
    store_evaluation(settings.home, "2", passed=False)
    instance = DagsterInstance.ephemeral()
    first = materialize_endpoint(settings, instance)
    again = materialize_endpoint(settings, instance)  # the same decision again: told once
    assert first.success and again.success
    assert counts(http, smtp) == (1, 1, 1)
    hook = http.at("/hook")[0]
    assert hook["event"] == "gate" and hook["data"]["decision"] == "keep"
    assert hook["data"]["served_version"] == "1" and "gate failed for version 2" in hook["data"]["reason"]
    assert "FAIL meets_minimum: accuracy 0.4100 >= 0.6 required" in hook["text"]
    assert hook["data"]["rules"][1]["numbers"] == {"challenger": 0.41, "minimum": 0.6}
    assert hook["url"] == f"{DAGSTER_URL}/assets/serving_endpoint?view=partitions&partition=widgets"
    assert "0.4100" in json.dumps(http.at("/services/")[0]) and "0.4100" in smtp.messages[0]
    texts = run_texts(instance, first.run_id) + run_texts(instance, again.run_id)
    assert any("sent to webhook via $ONTOS_NOTIFY_WEBHOOK_URL" in t for t in texts)  # logged, by variable name
    assert_no_secret(texts + [p.read_text() for p in (settings.home / "files" / "notifications").glob("*.jsonl")])


def test_a_deploy_is_told_with_the_versions_and_the_rules(settings, channels_env, http, smtp):
    store_evaluation(settings.home, "2", passed=True)
    assert materialize_endpoint(settings, DagsterInstance.ephemeral()).success
    assert counts(http, smtp) == (1, 1, 1)
    hook = http.at("/hook")[0]
    assert hook["title"] == "widgets: version 2 deployed to widgets" and hook["data"]["previous_version"] == "1"
    assert hook["data"]["reason"].startswith("gate passed: PASS beats_baseline") and hook["severity"] == "info"


# -- alerts -------------------------------------------------------------------------------------------------------
def test_a_newly_opened_alert_is_told_once_and_a_persisting_breach_not_again(
    settings, channels_env, http, smtp, lakehouse
):
    spec = load_use_cases(settings.use_cases_dir)["widgets"]
    notifier = Notifier(settings.home / "files" / "notifications", DAGSTER_URL)
    breach = Breach("error_rate", "error_rate", 0.2, 0.05, ">")
    for report in ("report-1", "report-2"):  # what monitoring_report does per report
        opened = raise_alerts(lakehouse, spec.name, [breach], report)
        if opened:
            notifier.notify(spec.notifications, alerts_notice(DAGSTER_URL, f"run-{report}", spec.name, opened))
    assert counts(http, smtp) == (1, 1, 1)
    hook = http.at("/hook")[0]
    assert hook["event"] == "alert" and "error_rate = 0.2 > threshold 0.05" in hook["text"]
    assert hook["url"].endswith("/assets/monitoring_report?view=partitions&partition=widgets")


# -- a receiver that is down --------------------------------------------------------------------------------------
def test_a_receiver_that_is_down_fails_no_run_and_gets_the_notice_once_on_retry(
    settings, channels_env, http, smtp, monkeypatch
):
    down = HttpReceiver(free_port())  # nothing listens there yet
    monkeypatch.setenv("ONTOS_NOTIFY_WEBHOOK_URL", f"http://127.0.0.1:{down.port}/hook?token={HOOK_TOKEN}")
    http.failures = 1  # and Slack answers 503 once
    store_evaluation(settings.home, "2", passed=False)
    instance = DagsterInstance.ephemeral()
    started = time.monotonic()
    result = materialize_endpoint(settings, instance)
    assert result.success and time.monotonic() - started < 30
    assert counts(http, smtp) == (0, 0, 1)  # e-mail went; Slack (503) and the webhook (down) wait in the outbox
    outbox = Outbox(settings.home / "files" / "notifications")
    waiting = outbox.pending()
    assert sorted(p["target"]["channel"] for p in waiting) == ["slack", "webhook"]
    assert all(p["attempts"] == 1 and p["last_error"] for p in waiting)
    texts = run_texts(instance, result.run_id)
    assert any("kept in the outbox" in t for t in texts)

    defs = build_definitions(settings)
    retry = defs.resolve_sensor_def(RETRY_SENSOR)
    context = build_sensor_context(instance=instance, resources={"notifier": defs.resources["notifier"]})
    retry(context)  # Slack is back, the webhook still down
    assert counts(http, smtp) == (1, 0, 1) and len(outbox.pending()) == 1
    down.start()
    try:
        for _ in range(2):
            retry(build_sensor_context(instance=instance, resources={"notifier": defs.resources["notifier"]}))
        assert len(down.at("/hook")) == 1 and down.at("/hook")[0]["event"] == "gate"
    finally:
        down.stop()
    assert counts(http, smtp) == (1, 0, 1) and outbox.pending() == []
    assert len(outbox.delivered()) == 3
    errors = [p["last_error"] for p in waiting]
    assert any("503" in e for e in errors) and any("cannot reach" in e for e in errors)
    files = [(settings.home / "files" / "notifications" / n).read_text() for n in (PENDING, DELIVERED)]
    assert_no_secret(texts + errors + files)


def test_an_unset_channel_is_skipped_with_a_line_and_nothing_raises(settings, monkeypatch, tmp_path):
    for var in ("ONTOS_SLACK_WEBHOOK_URL", "ONTOS_NOTIFY_WEBHOOK_URL", "ONTOS_SMTP_HOST"):
        monkeypatch.delenv(var, raising=False)
    lines: list[str] = []
    log = SimpleNamespace(info=lines.append, warning=lines.append, error=lines.append)
    spec = load_use_cases(settings.use_cases_dir)["widgets"]
    notice = alerts_notice(DAGSTER_URL, "r1", "widgets", [{"alert_id": "a1", "kind": "drift", "message": "m"}])
    outcome = Notifier(tmp_path / "outbox", DAGSTER_URL, log=log).notify(spec.notifications, notice)
    assert len(outcome.skipped) == 3 and outcome.delivered == outcome.pending == []
    assert any("$ONTOS_SLACK_WEBHOOK_URL is not set" in line for line in lines)
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    monkeypatch.setenv("ONTOS_NOTIFY_WEBHOOK_URL", f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}")
    Notifier(unwritable / "outbox", DAGSTER_URL, log=log).notify(spec.notifications, notice)  # logged, not raised
    assert "not sent" in lines[-1]
    assert_no_secret(lines)
    resource = NotifierResource(outbox_dir=str(tmp_path), dagster_url=DAGSTER_URL)
    assert resource.get().dagster_url == DAGSTER_URL
