"""Who may call `ontos serve`: bearer tokens with scopes, as Databricks Model Serving asks `Authorization: Bearer`.

Two sources of tokens:
- named tokens, made and revoked with `ontos token create|revoke NAME`: each has scopes (`invoke`, `feedback`)
  and is stored only as its SHA-256 under `$ONTOS_HOME/serving/tokens.json` (mode 0600, replaced atomically);
  its name is the caller recorded in the inference log and on feedback rows;
- `ONTOS_SERVE_TOKEN` in the serving process's environment (the simple case): every scope, caller
  `ONTOS_SERVE_TOKEN`.

A token is shown once, when it is made; neither it nor its hash is ever logged. The serving process rereads the
file when it changes, so a revoked token is refused from the next request on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCOPES = ("invoke", "feedback")
ENV_TOKEN = "ONTOS_SERVE_TOKEN"
TOKEN_PREFIX = "ontos_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class TokenError(ValueError):
    """A token command that cannot be done (names the token and what to do)."""


class AuthError(Exception):
    """A refused call: 401 (no or unknown token) or 403 (the token lacks the scope)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    @property
    def code(self) -> str:
        return "UNAUTHENTICATED" if self.status == 401 else "PERMISSION_DENIED"


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise TokenError(f"unknown scope {unknown[0]!r}; use some of {', '.join(SCOPES)}" if unknown else "no scope")
    return scopes


class TokenStore:
    """The named tokens of one ONTOS_HOME (`serving/tokens.json`); every change under a file lock, atomically."""

    def __init__(self, home: Path | str):
        self.path = Path(home) / "serving" / "tokens.json"

    def tokens(self) -> list[dict]:
        """Every token ever made (revoked ones too), without secrets: name, scopes, created, by, revoked."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise TokenError(f"{self.path} is not a token file ({exc}); restore it or delete it") from None
        return list(data.get("tokens", []))

    def create(self, name: str, scopes: tuple[str, ...] = SCOPES, by: str | None = None, replace: bool = False) -> str:
        """Make a token; returns it (the only time it is seen). `replace` revokes an active token of that name."""
        if not _NAME.match(name):
            raise TokenError(f"token name {name!r}: use 1-64 letters, digits and _ . @ - (it names the caller)")
        scopes = parse_scopes(",".join(scopes))
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._changing() as tokens:
            active = [t for t in tokens if t["name"] == name and not t.get("revoked_at")]
            if active and not replace:
                raise TokenError(f"a token named {name!r} exists; revoke it first (`ontos token revoke {name}`)")
            now = datetime.now(UTC).isoformat()
            for t in active:
                t["revoked_at"] = now
            tokens.append(
                {"name": name, "sha256": _digest(token), "scopes": list(scopes), "created_at": now, "created_by": by}
            )
        return token

    def revoke(self, name: str) -> int:
        """Revoke the active token of that name; returns how many were revoked (TokenError if none)."""
        with self._changing() as tokens:
            active = [t for t in tokens if t["name"] == name and not t.get("revoked_at")]
            if not active:
                known = sorted({t["name"] for t in tokens if not t.get("revoked_at")})
                raise TokenError(f"no active token named {name!r}; active: {', '.join(known) or 'none'}")
            for t in active:
                t["revoked_at"] = datetime.now(UTC).isoformat()
        return len(active)

    @contextlib.contextmanager
    def _changing(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = self.tokens()
            yield tokens
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
                    json.dump({"tokens": tokens}, handle, indent=1)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise


class Authenticator:
    """Checks the `Authorization` header of each call against the store (reread when it changes) and the
    environment token; counts refusals by status."""

    def __init__(self, store: TokenStore, env_token: str | None = None):
        self.store, self.env_token = store, env_token or None
        self.refused: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, Caller] = {}

    def configured(self) -> bool:
        """Whether any token can be accepted."""
        return bool(self.env_token) or bool(self._active())

    def caller(self, authorization: str | None, scope: str | None) -> Caller:
        """The caller of a valid token with `scope` (None: any valid token); AuthError otherwise (counted)."""
        try:
            return self._check(authorization, scope)
        except AuthError as exc:
            with self._lock:
                self.refused[exc.status] += 1
            raise

    def _check(self, authorization: str | None, scope: str | None) -> Caller:
        how = "send 'Authorization: Bearer <token>' (make one with `ontos token create NAME`)"
        if not authorization:
            raise AuthError(401, f"this call needs a token: {how}")
        kind, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise AuthError(401, f"the Authorization header is not a bearer token: {how}")
        found = self._active().get(_digest(token))
        if found is None and self.env_token and hmac.compare_digest(token.encode(), self.env_token.encode()):
            found = Caller(ENV_TOKEN, frozenset(SCOPES))
        if found is None:
            raise AuthError(401, f"the token is not valid (unknown or revoked): {how}")
        if scope is not None and scope not in found.scopes:
            raise AuthError(
                403,
                f"the token {found.name!r} has the scopes {', '.join(sorted(found.scopes))}; this call needs "
                f"{scope!r} (`ontos token create NAME --scopes {scope}`)",
            )
        return found

    def _active(self) -> dict[str, Caller]:
        try:
            st = self.store.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                tokens = self.store.tokens() if stamp else []
                self._by_digest = {
                    t["sha256"]: Caller(t["name"], frozenset(t["scopes"])) for t in tokens if not t.get("revoked_at")
                }
                self._stamp = stamp
            return self._by_digest


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
