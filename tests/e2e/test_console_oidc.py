"""Signing in to the console through an OpenID Connect provider (authorization code with PKCE), against a
small local provider (tests/oidc_provider.py): the flow completes for a compliance officer, and a forged
state, a replayed code or a clinician's sign-in gets nothing."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.oidc_provider import Provider

pytestmark = pytest.mark.components


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    started = Provider(lambda sub, role: "")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def server(
    built_functions: list[str], provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("console-oidc"), patients=4, WARDFN_CONSOLE_OIDC_ISSUER=provider.url
    )
    provider.tokens = process.token  # the development issuer stands in for the provider's signing key
    yield process
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as opened:
        yield opened


def _to_provider(client: httpx.Client) -> str:
    """Start a sign-in; the provider's authorization URL."""
    start = client.get("/console/oidc/start")
    assert start.status_code == 303, start.text
    return start.headers["location"]


def _back_from_provider(client: httpx.Client, authorize: str) -> str:
    """The provider signs its user in and sends the browser back: the callback's URL."""
    answer = httpx.get(authorize)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def test_an_officer_signs_in_through_the_provider_with_pkce(
    server: ServerProcess, provider: Provider, client: httpx.Client
) -> None:
    provider.user = ("co-ramos", "compliance_officer")
    assert 'href="/console/oidc/start"' in client.get("/console/").text
    authorize = _to_provider(client)
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == [f"{server.url}/console/oidc/callback"] and query["state"][0]
    callback = _back_from_provider(client, authorize)
    landed = client.get(callback)
    assert landed.status_code == 200 and "url=/console/reviews" in landed.text, landed.text
    queue = client.get("/console/reviews")
    assert queue.status_code == 200 and "Review queue" in queue.text


def test_a_forged_state_or_a_replayed_code_signs_no_one_in(provider: Provider, client: httpx.Client) -> None:
    provider.user = ("co-ramos", "compliance_officer")
    callback = _back_from_provider(client, _to_provider(client))
    forged = callback.replace("state=", "state=x")
    assert client.get(forged).status_code == 401
    assert client.get("/console/reviews").status_code == 303  # not signed in
    # A code already exchanged, replayed with a fresh sign-in's state: the provider refuses it.
    callback = _back_from_provider(client, _to_provider(client))
    assert client.get(callback).status_code == 200
    client.cookies.clear()
    state = parse_qs(urlsplit(_to_provider(client)).query)["state"][0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    replayed = client.get("/console/oidc/callback", params={"code": code, "state": state})
    assert replayed.status_code == 401 and provider.refused[-1] == "unknown or spent code"
    assert client.get("/console/reviews").status_code == 303


def test_a_code_from_another_sign_in_does_not_match_this_ones_verifier(
    provider: Provider, client: httpx.Client, server: ServerProcess
) -> None:
    provider.user = ("co-ramos", "compliance_officer")
    theirs = _back_from_provider(client, _to_provider(client))
    with httpx.Client(base_url=server.url, timeout=30) as mine:
        mine_authorize = _to_provider(mine)
        state = parse_qs(urlsplit(mine_authorize).query)["state"][0]
        code = parse_qs(urlsplit(theirs).query)["code"][0]
        stolen = mine.get("/console/oidc/callback", params={"code": code, "state": state})
        assert stolen.status_code == 401
        assert provider.refused[-1] == "PKCE verifier does not match"


def test_a_clinician_signed_in_through_the_provider_sees_nothing(provider: Provider, client: httpx.Client) -> None:
    provider.user = ("dr-grey", "physician")
    assert client.get(_back_from_provider(client, _to_provider(client))).status_code == 200
    refused = client.get("/console/reviews")
    assert refused.status_code == 403 and "Refused by policy" in refused.text
