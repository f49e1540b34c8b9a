"""The console's session cookie: signed, and no session once idle past the timeout."""

from __future__ import annotations

from host.http.console.session import Session, seal, unseal

KEY = b"k" * 32


def test_a_session_round_trips_until_it_idles_out() -> None:
    cookie = seal(KEY, Session("tok", "csrf", 1000.0))
    assert unseal(KEY, cookie, 900, now=1000.0 + 900) == Session("tok", "csrf", 1000.0)
    assert unseal(KEY, cookie, 900, now=1000.0 + 901) is None


def test_a_cookie_signed_with_another_key_or_altered_is_no_session() -> None:
    cookie = seal(KEY, Session("tok", "csrf", 1000.0))
    assert unseal(b"x" * 32, cookie, 900, now=1000.0) is None
    body, _, mac = cookie.rpartition(".")
    assert unseal(KEY, body[:-2] + "AA." + mac, 900, now=1000.0) is None
    assert unseal(KEY, None, 900) is None and unseal(KEY, "no-dot", 900) is None
