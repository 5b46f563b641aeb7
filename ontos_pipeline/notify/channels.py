"""Sending one notice on one channel: Slack and the generic webhook over HTTP(S) (urllib), e-mail over SMTP
(smtplib, optional STARTTLS / SMTPS and login). Every wait is bounded (`TIMEOUT` seconds).

A `Target` is a channel with its settings: names of environment variables and other non-secret values, never a
secret, so it can be stored in the outbox and shown in logs. The secrets are read from the environment when a
notice is sent; an error message never holds them (`DeliveryError` texts are redacted).
"""

from __future__ import annotations

import hashlib
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from ontos_pipeline.notify.messages import Notice, email_message, slack_payload, webhook_payload
from ontos_pipeline.specs import EmailChannelSpec, SlackChannelSpec, WebhookChannelSpec

TIMEOUT = 5.0  # seconds, per connection attempt and per read
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class DeliveryError(RuntimeError):
    """The receiver did not take the notice (down, refused, 4xx/5xx); the message holds no secret."""


class Unconfigured(RuntimeError):
    """The channel's environment variable is unset: the channel is skipped (the message names the variable)."""


@dataclass(frozen=True)
class Target:
    channel: str  # slack | email | webhook
    settings: tuple[tuple[str, object], ...]  # sorted (key, value): variable names, addresses, tls mode

    @classmethod
    def of(cls, spec: SlackChannelSpec | EmailChannelSpec | WebhookChannelSpec) -> Target:
        if isinstance(spec, SlackChannelSpec):
            return cls("slack", (("webhook_url_env", spec.webhook_url_env),))
        if isinstance(spec, WebhookChannelSpec):
            return cls("webhook", (("url_env", spec.url_env),))
        values = {
            "to": list(spec.to),
            "from": spec.sender,
            "smtp_host_env": spec.smtp_host_env,
            "smtp_port_env": spec.smtp_port_env,
            "smtp_user_env": spec.smtp_user_env,
            "smtp_password_env": spec.smtp_password_env,
            "tls": spec.tls,
        }
        return cls("email", tuple(sorted(values.items())))

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> Target:
        settings = raw["settings"]
        assert isinstance(settings, Mapping)
        return cls(str(raw["channel"]), tuple(sorted(settings.items())))

    def to_json(self) -> dict:
        return {"channel": self.channel, "settings": dict(self.settings)}

    @property
    def id(self) -> str:
        """Stable across processes: the same channel settings are the same receiver."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return f"{self.channel}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @property
    def label(self) -> str:
        """How logs name the receiver: the channel and the variable that holds its address (not its value)."""
        s = dict(self.settings)
        if self.channel == "email":
            return f"email to {', '.join(s['to'])} via ${s['smtp_host_env']}"  # type: ignore[arg-type]
        return f"{self.channel} via ${s.get('webhook_url_env') or s.get('url_env')}"

    def secrets(self, env: Mapping[str, str]) -> list[str]:
        """The values to keep out of every message: URLs, user and password."""
        keys = ("webhook_url_env", "url_env", "smtp_user_env", "smtp_password_env")
        s = dict(self.settings)
        return [env[str(s[k])] for k in keys if k in s and env.get(str(s[k]))]


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "[secret]")
    return text


def send(target: Target, notice: Notice, env: Mapping[str, str], timeout: float = TIMEOUT) -> str | None:
    """Deliver `notice` to `target`; Unconfigured when its variable is unset, DeliveryError when it fails. Returns a
    note on a partial delivery (some e-mail recipients refused: the others got it, so it is not sent again)."""
    s = dict(target.settings)
    try:
        if target.channel == "slack":
            _post(_required(env, str(s["webhook_url_env"])), slack_payload(notice), timeout, expect_ok=True)
        elif target.channel == "webhook":
            _post(_required(env, str(s["url_env"])), webhook_payload(notice), timeout, expect_ok=False)
        elif target.channel == "email":
            return _mail(s, notice, env, timeout)
        else:
            raise DeliveryError(f"unknown channel {target.channel!r}")
    except (DeliveryError, Unconfigured) as exc:
        raise type(exc)(redact(str(exc), target.secrets(env))) from None
    except Exception as exc:  # anything else a receiver or the network did: a failed delivery, never a crash
        raise DeliveryError(redact(f"{type(exc).__name__}: {exc}", target.secrets(env))) from None
    return None


def _required(env: Mapping[str, str], name: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise Unconfigured(f"${name} is not set")
    return value


def _post(url: str, payload: dict, timeout: float, expect_ok: bool) -> None:
    if not url.startswith(("https://", "http://")):
        raise DeliveryError("the URL is not http(s)")  # no file:// or other schemes; the URL itself is not shown
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "ontos-pipeline"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(2048)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"cannot reach the receiver ({exc.reason})") from None
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    if expect_ok and body.strip() not in (b"ok", b""):  # Slack answers `ok`; anything else is its error text
        raise DeliveryError(f"the receiver answered {body[:200].decode(errors='replace')!r}")


def _mail(s: Mapping[str, object], notice: Notice, env: Mapping[str, str], timeout: float) -> str | None:
    host = _required(env, str(s["smtp_host_env"]))
    tls = str(s["tls"])
    port_text = (env.get(str(s["smtp_port_env"])) or "").strip() or str(DEFAULT_PORTS[tls])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DeliveryError(f"${s['smtp_port_env']} is not a TCP port")
    user, password = env.get(str(s["smtp_user_env"])) or "", env.get(str(s["smtp_password_env"])) or ""
    to = [str(a) for a in s["to"]]  # type: ignore[union-attr]
    message = email_message(notice, str(s["from"]), to)
    context = ssl.create_default_context()
    try:
        if tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, int(port_text), timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, int(port_text), timeout=timeout)
        with client:
            if tls == "starttls":
                client.starttls(context=context)
            if user:
                client.login(user, password)
            refused = client.send_message(message)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.smtp_code} {exc.smtp_error.decode(errors='replace')[:200]}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"SMTP refused every recipient ({', '.join(exc.recipients)})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {type(exc).__name__}: {exc}") from None
    return f"SMTP refused {', '.join(refused)}" if refused else None
