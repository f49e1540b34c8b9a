"""Signing in to the console through an OpenID Connect provider: the authorization code flow with PKCE.

The console is a public client (no secret): `start` makes a state, a nonce and a PKCE verifier,
kept in a short-lived signed cookie, and sends the browser to the provider; `finish` checks the
state, exchanges the code (with the verifier) for tokens, and returns the access token, which the
host then verifies exactly as it verifies an API bearer token. The provider's discovery document
is read for its endpoints on every sign-in (a sign-in is rare; no cache to go stale).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from host.errors import AuthenticationError

TIMEOUT_S = 10.0
# How long a sign-in may take at the provider before its state cookie is no longer accepted.
FLOW_TTL_S = 600


@dataclass(frozen=True)
class Flow:
    """One sign-in in progress: what the browser's cookie holds until the provider sends it back."""

    state: str
    nonce: str
    verifier: str


def new_flow() -> Flow:
    return Flow(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64))


def challenge(verifier: str) -> str:
    """PKCE's S256 code challenge (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


async def _endpoints(client: httpx.AsyncClient, issuer: str) -> dict[str, str]:
    try:
        response = await client.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise AuthenticationError("the identity provider cannot be reached; try again later") from exc
    endpoints = {k: document.get(k) for k in ("authorization_endpoint", "token_endpoint")}
    if not all(isinstance(v, str) and v.startswith(("https://", "http://")) for v in endpoints.values()):
        raise AuthenticationError("the identity provider's discovery document names no usable endpoints")
    if "S256" not in (document.get("code_challenge_methods_supported") or ["S256"]):
        raise AuthenticationError("the identity provider does not support PKCE with S256")
    return {k: str(v) for k, v in endpoints.items()}


async def authorization_url(issuer: str, client_id: str, redirect_uri: str, flow: Flow) -> str:
    """Where to send the browser to sign in."""
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        endpoint = (await _endpoints(client, issuer))["authorization_endpoint"]
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": challenge(flow.verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


async def exchange(issuer: str, client_id: str, redirect_uri: str, flow: Flow, code: str) -> str:
    """The access token the provider gives for `code` and the flow's PKCE verifier."""
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        endpoint = (await _endpoints(client, issuer))["token_endpoint"]
        try:
            response = await client.post(
                endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "code_verifier": flow.verifier,
                },
                headers={"Accept": "application/json"},
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthenticationError("the identity provider cannot be reached; try again later") from exc
    token = body.get("access_token") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(token, str) or not token:
        raise AuthenticationError("the identity provider refused the sign-in")
    return token
