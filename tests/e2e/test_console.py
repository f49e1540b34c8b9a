"""The console over plain HTTP: its headers on every response, CSRF on every form, sign-in only with a
valid token, the policy deciding every page (a clinician sees nothing), hostile form input refused or
escaped, and no patient data in its URLs or in the server's log."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGES = ["/console/", "/console/reviews", "/console/report", "/console/chain", "/console/nowhere",
         "/console/static/console.css", "/console/reviews/999999", "/console/reviews/abc"]  # fmt: skip


_OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(server: ServerProcess) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30)
    _OPEN.append(client)
    return client


@pytest.fixture(scope="module")
def server(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("console-http"), patients=12)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def glass(server: ServerProcess) -> tuple[int, str]:
    """A break-the-glass access waiting for review: (its seq, the patient)."""
    store = server.open_store()
    try:
        pid = store.list_patients(2)[1]["id"]
    finally:
        store.close()
    response = httpx.get(
        f"{server.url}/v1/patients/{pid}/summary",
        params={"purpose": "ETREAT"},
        headers={**server.headers("rn-cole", "nurse"), "X-Break-Glass-Reason": "collapsed at the desk"},
    )
    assert response.status_code == 200, response.text
    log = server.open_audit()
    try:
        [seq] = [r.seq for r in log.flagged() if r.event.request_id == response.headers["x-request-id"]]
    finally:
        log.close()
    return seq, pid


def _signed_in(server: ServerProcess, sub: str = "co-ramos", role: str = "compliance_officer") -> httpx.Client:
    client = _client(server)
    page = client.get("/console/")
    [csrf] = CSRF.findall(page.text)
    done = client.post("/console/sign-in", data={"csrf": csrf, "token": server.token(sub, role)})
    assert done.status_code == 303 and done.headers["location"] == "/console/reviews", done.text
    return client


def _csrf(client: httpx.Client, path: str) -> str:
    return CSRF.findall(client.get(path).text)[-1]


@pytest.mark.parametrize("path", PAGES)
def test_every_console_response_carries_its_headers(server: ServerProcess, path: str) -> None:
    for client in (_client(server), _signed_in(server)):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src" not in csp
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in httpx.get(f"{server.url}/healthz").headers


def test_sign_in_needs_the_forms_csrf_token_and_a_valid_token(server: ServerProcess) -> None:
    client = _client(server)
    [csrf] = CSRF.findall(client.get("/console/").text)
    token = server.token("co-ramos", "compliance_officer")
    assert client.post("/console/sign-in", data={"csrf": "forged", "token": token}).status_code == 401
    assert client.post("/console/sign-in", data={"csrf": csrf, "token": token + "x"}).status_code == 401
    # Without a session every page sends the browser to sign in; a forged cookie is no session.
    assert client.get("/console/reviews").status_code == 303
    client.cookies.set("wardfn_console", "eyJ0Ijoi.abcdef", path="/console")
    assert client.get("/console/reviews").headers["location"] == "/console/signed-out"


def test_every_form_needs_the_sessions_csrf_token(server: ServerProcess, glass: tuple[int, str]) -> None:
    seq, _ = glass
    client = _signed_in(server)
    for path, data in [
        (f"/console/reviews/{seq}/dispositions", {"disposition": "justified"}),
        (f"/console/reviews/{seq}/reveal", {}),
        ("/console/report", {"patient_id": glass[1]}),
    ]:
        refused = client.post(path, data={**data, "csrf": "not-the-token"})
        assert refused.status_code == 403 and glass[1] not in refused.text, path
    log = server.open_audit()
    try:
        assert not [r for r in log.records(limit=100_000) if r.event.function == "review:disposition"]
    finally:
        log.close()


@pytest.mark.parametrize("role", ["physician", "nurse", "patient", "authorized_medical_staff"])
def test_anyone_but_a_compliance_officer_sees_nothing(server: ServerProcess, glass: tuple[int, str], role: str) -> None:
    seq, pid = glass
    client = _signed_in(server, "someone", role)
    for response in [
        client.get("/console/reviews"),
        client.get(f"/console/reviews/{seq}"),
        client.get("/console/chain"),
        client.post("/console/report", data={"csrf": _csrf(client, "/console/report"), "patient_id": pid}),
        client.post(f"/console/reviews/{seq}/reveal", data={"csrf": _csrf(client, "/console/report")}),
    ]:
        assert response.status_code == 403, response.text
        assert "Refused by policy" in response.text
        assert pid not in response.text and "collapsed" not in response.text and f"Review {seq}" not in response.text


def test_hostile_form_input_is_refused_or_escaped(server: ServerProcess, glass: tuple[int, str]) -> None:
    seq, pid = glass
    client = _signed_in(server)
    csrf = _csrf(client, "/console/report")
    for patient_id in ["../../etc/passwd", "<script>alert(1)</script>", "x" * 65, "", "p\x00"]:
        response = client.post("/console/report", data={"csrf": csrf, "patient_id": patient_id})
        assert response.status_code == 422 and "<script>" not in response.text, patient_id
    assert client.post("/console/report", content=b"csrf=" + csrf.encode() + b"&patient_id=\xff\xfe").status_code == 422
    assert client.post("/console/report", content=b"a=" + b"x" * 70_000).status_code in (413, 422)
    many = "&".join(f"f{i}=1" for i in range(50))
    assert client.post("/console/report", content=f"csrf={csrf}&{many}".encode()).status_code == 422
    bad = client.post(f"/console/reviews/{seq}/dispositions", data={"csrf": csrf, "disposition": "erase"})
    assert bad.status_code == 422
    for path in ["/console/reviews/0", "/console/reviews/-1", f"/console/reviews/{2**70}", "/console/reviews/1e3"]:
        assert client.get(path).status_code == 422, path
    # A note is shown escaped, never as markup.
    note = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    done = client.post(
        f"/console/reviews/{seq}/dispositions", data={"csrf": csrf, "disposition": "referred", "note": note}
    )
    assert done.status_code == 200 and "Disposition recorded." in done.text
    assert "<script>" not in done.text and "&lt;script&gt;" in done.text and "<img" not in done.text
    assert client.get("/console/reviews", params={"state": "<b>"}).status_code == 422


def test_no_patient_data_in_urls_or_the_log_and_every_field_is_labelled(
    server: ServerProcess, glass: tuple[int, str]
) -> None:
    seq, pid = glass
    client = _signed_in(server)
    pages = [client.get("/console/reviews?state=all"), client.get(f"/console/reviews/{seq}")]
    csrf = CSRF.findall(pages[-1].text)[-1]
    pages.append(client.post(f"/console/reviews/{seq}/reveal", data={"csrf": csrf}))
    pages.append(client.post("/console/report", data={"csrf": csrf, "patient_id": pid}))
    assert pid in pages[2].text and pid in pages[3].text  # revealed, and the report asked for
    for page in pages:
        links = re.findall(r'(?:href|action)="([^"]+)"', page.text)
        assert links and not [link for link in links if pid in link], links
        ids = set(re.findall(r'<(?:input|textarea|select)(?![^>]*type="hidden")[^>]*id="([^"]+)"', page.text))
        labelled = set(re.findall(r'<label for="([^"]+)"', page.text))
        assert ids <= labelled, ids - labelled
        assert '<html lang="en">' in page.text and 'href="#main"' in page.text
    assert pid not in server.output() and "collapsed" not in server.output()


def test_the_page_signs_out_by_itself_after_the_idle_timeout(server: ServerProcess) -> None:
    client = _signed_in(server)
    page = client.get("/console/reviews")
    assert '<meta http-equiv="refresh" content="900;url=/console/signed-out">' in page.text
    out = client.get("/console/signed-out")
    assert "inactivity" in out.text
    assert client.get("/console/reviews").status_code == 303
