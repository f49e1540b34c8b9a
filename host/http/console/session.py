"""The console's session: a signed cookie holding the bearer token, a CSRF token and the last activity.

The token is verified on every request, as a bearer header is, so an expired or revoked token ends
the session; the session ends too after `console_idle_timeout_s` without a request (automatic
logoff). The cookie is HttpOnly, SameSite=Strict, scoped to /console, and Secure in production.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

COOKIE = "wardfn_console"
# Before sign-in: the sign-in form's own CSRF token (double submit).
PRE_COOKIE = "wardfn_console_signin"
MAX_COOKIE_CHARS = 20_000


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    last_seen: float


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def seal(key: bytes, session: Session) -> str:
    """The cookie value: the session as JSON, base64url, and its HMAC."""
    return sign(key, {"t": session.token, "c": session.csrf, "a": session.last_seen})


def unseal(key: bytes, value: str | None, idle_timeout_s: float, now: float | None = None) -> Session | None:
    """The session in a cookie this host signed and that has not idled out; None otherwise."""
    raw = opened(key, value)
    try:
        session = Session(str(raw["t"]), str(raw["c"]), float(raw["a"])) if raw is not None else None
    except (ValueError, KeyError, TypeError):
        return None
    if session is None or (now if now is not None else time.time()) - session.last_seen > idle_timeout_s:
        return None
    return session


def sign(key: bytes, fields: dict[str, Any]) -> str:
    """`fields` as a cookie value: JSON, base64url, and its HMAC under the host's console key."""
    body = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()
    return f"{body}.{_mac(key, body)}"


def opened(key: bytes, value: str | None) -> dict[str, Any] | None:
    """The fields of a cookie value `sign` made with `key`; None if it is not one."""
    if not value or len(value) > MAX_COOKIE_CHARS or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    if not hmac.compare_digest(mac, _mac(key, body)):
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


def same(expected: str, given: str | None) -> bool:
    """A CSRF check in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
