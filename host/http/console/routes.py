"""The console's routes: sign-in and sign-out, the review queue, one review, an access report, the chain.

Every page that reads is an act of the privacy office, decided and audited first, as over the API;
a refusal is a page saying so and nothing else. No patient data in a URL: the patient id of a report
is posted in a form, and a revealed patient appears only in the page that answers the reveal.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from host.assembly import Host
from host.errors import (
    AuthenticationError,
    InvalidRequest,
    PolicyDenied,
    ReviewNotFound,
    Unavailable,
    WardfnError,
)
from host.http.console import oidc, pages
from host.http.console.session import COOKIE, PRE_COOKIE, Session, new_csrf, opened, same, seal, sign, unseal
from host.http.errors import request_id_of
from host.keys import load_or_create_key
from host.privacy.report import END_OF_TIME, timestamp

SESSION_KEY = "console-session-hmac.key"
FLOW_COOKIE = "wardfn_console_oidc"
PURPOSE = "HCOMPL"
MAX_FORM_BYTES = 64 * 1024
PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
STYLESHEET = files("host.http.console").joinpath("console.css").read_bytes()
T = TypeVar("T")

router = APIRouter(prefix="/console", include_in_schema=False)


class _SignedOut(Exception):
    """No session, an idle one, or a token no longer valid: back to sign-in."""

    def __init__(self, idle: bool = False) -> None:
        self.idle = idle


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _key(host: Host) -> bytes:
    return load_or_create_key(host.settings.key_dir / SESSION_KEY)


def _idle(host: Host) -> int:
    return host.settings.console_idle_timeout_s


def _cookie(response: Response, name: str, value: str, host: Host) -> None:
    response.set_cookie(name, value, path="/console", httponly=True, samesite="strict", secure=host.settings.production)


def _session(request: Request, host: Host) -> Session:
    raw = request.cookies.get(COOKIE)
    session = unseal(_key(host), raw, _idle(host))
    if session is None:
        raise _SignedOut(idle=raw is not None)
    return session


def _html(request: Request, host: Host, body: str, session: Session | None, status: int = 200) -> HTMLResponse:
    response = HTMLResponse(body, status_code=status)
    if session is not None:  # every request is activity: the idle clock starts again
        _cookie(response, COOKIE, seal(_key(host), Session(session.token, session.csrf, time.time())), host)
    return response


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form, bounded; the first value of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest("the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("the form cannot be read") from exc
    return {name: values[0] for name, values in fields.items()}


async def _page(
    request: Request, render: Callable[[Any, Session, Host], str], call: Callable[..., T] | None, *args: Any,
    form: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    """A signed-in page: the session checked (and the CSRF token of a form), the act run off the event
    loop as the subject the token names, its answer rendered; a host error is a page saying so."""
    host = _host(request)
    try:
        session = _session(request, host)
        if form is not None and not same(session.csrf, form.get("csrf")):
            return _html(
                request, host, pages.error(403, "The form has expired: reload the page.", None, None), None, 403
            )
        subject = host.verifier.verify(f"Bearer {session.token}")
    except (_SignedOut, AuthenticationError) as exc:
        response = RedirectResponse("/console/signed-out" if getattr(exc, "idle", False) else "/console/", 303)
        response.delete_cookie(COOKIE, path="/console")
        return response
    try:
        result = None
        if call is not None:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                request.app.state.invokers, call, request_id_of(request), subject, *args
            )
        request.state.outcome = "ok"
        return _html(request, host, render(result, session, host), session)
    except WardfnError as exc:
        request.state.outcome = exc.code
        status, message = _status(exc)
        return _html(request, host, pages.error(status, message, session.csrf, _idle(host)), session, status)


def _status(exc: WardfnError) -> tuple[int, str]:
    if isinstance(exc, PolicyDenied):
        return 403, "Refused by policy: your role does not permit this. Nothing was shown; the attempt is recorded."
    if isinstance(exc, ReviewNotFound):
        return 404, "No such record waits for review."
    if isinstance(exc, InvalidRequest):
        return 422, str(exc)
    if isinstance(exc, Unavailable):
        return 503, "The host cannot answer now (fail closed): try again shortly."
    return 500, "The request failed."


@router.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(STYLESHEET, media_type="text/css")


@router.get("/")
async def sign_in_page(request: Request) -> Response:
    host = _host(request)
    if unseal(_key(host), request.cookies.get(COOKIE), _idle(host)) is not None:
        return RedirectResponse("/console/reviews", 303)
    csrf = new_csrf()
    response = HTMLResponse(pages.sign_in(csrf, development=not host.settings.production, oidc=_oidc(host)))
    _cookie(response, PRE_COOKIE, csrf, host)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    host = _host(request)
    csrf = new_csrf()
    try:
        form = await _form(request)
        if host.settings.production:
            raise AuthenticationError("the development token form is off in production")
        if not same(request.cookies.get(PRE_COOKIE, ""), form.get("csrf")):
            raise AuthenticationError("the sign-in form has expired: try again")
        host.verifier.verify(f"Bearer {form.get('token', '').strip()}")
    except (AuthenticationError, InvalidRequest) as exc:
        request.state.outcome = "unauthenticated"
        refused = HTMLResponse(
            pages.sign_in(
                csrf, development=not host.settings.production, oidc=_oidc(host), message=f"Not signed in: {exc}"
            ),
            401,
        )
        _cookie(refused, PRE_COOKIE, csrf, host)
        return refused
    response = RedirectResponse("/console/reviews", 303)
    response.delete_cookie(PRE_COOKIE, path="/console")
    _cookie(response, COOKIE, seal(_key(host), Session(form["token"].strip(), new_csrf(), time.time())), host)
    return response


def _oidc(host: Host) -> bool:
    return bool(host.settings.console_oidc_issuer)


def _redirect_uri(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


@router.get("/oidc/start")
async def oidc_start(request: Request) -> Response:
    """Send the browser to the identity provider, with a fresh state, nonce and PKCE challenge."""
    host = _host(request)
    issuer = host.settings.console_oidc_issuer
    if not issuer:
        return HTMLResponse(pages.error(404, "No identity provider is configured.", None, None), 404)
    flow = oidc.new_flow()
    try:
        url = await oidc.authorization_url(issuer, host.settings.console_oidc_client_id, _redirect_uri(request), flow)
    except AuthenticationError as exc:
        return _refused_sign_in(host, str(exc))
    response = RedirectResponse(url, 303)
    # Lax, not Strict: the provider's redirect back is a cross-site navigation, and must carry it.
    fields = {"s": flow.state, "n": flow.nonce, "v": flow.verifier, "t": time.time()}
    response.set_cookie(
        FLOW_COOKIE, sign(_key(host), fields), max_age=oidc.FLOW_TTL_S, path="/console/oidc",
        httponly=True, samesite="lax", secure=host.settings.production,
    )  # fmt: skip
    return response


@router.get("/oidc/callback", name="oidc_callback")
async def oidc_callback(
    request: Request,
    code: Annotated[str, Query(max_length=4096)] = "",
    state: Annotated[str, Query(max_length=512)] = "",
    error: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    """The provider's answer: the state checked against the flow's cookie, the code exchanged with the
    PKCE verifier, the access token verified as any bearer token is, and a session begun."""
    host = _host(request)
    issuer = host.settings.console_oidc_issuer
    raw = opened(_key(host), request.cookies.get(FLOW_COOKIE))
    try:
        if not issuer:
            raise AuthenticationError("no identity provider is configured")
        if error:
            raise AuthenticationError("the identity provider refused the sign-in")
        if raw is None or time.time() - float(raw.get("t", 0)) > oidc.FLOW_TTL_S:
            raise AuthenticationError("the sign-in took too long or was not started here: try again")
        if not code or not same(str(raw.get("s", "")), state):
            raise AuthenticationError("the sign-in's state does not match: try again")
        flow = oidc.Flow(str(raw["s"]), str(raw.get("n", "")), str(raw.get("v", "")))
        token = await oidc.exchange(issuer, host.settings.console_oidc_client_id, _redirect_uri(request), flow, code)
        host.verifier.verify(f"Bearer {token}")
    except AuthenticationError as exc:
        request.state.outcome = "unauthenticated"
        response = _refused_sign_in(host, str(exc))
        response.delete_cookie(FLOW_COOKIE, path="/console/oidc")
        return response
    response = HTMLResponse(pages.signed_in())
    response.delete_cookie(FLOW_COOKIE, path="/console/oidc")
    _cookie(response, COOKIE, seal(_key(host), Session(token, new_csrf(), time.time())), host)
    return response


def _refused_sign_in(host: Host, message: str) -> HTMLResponse:
    csrf = new_csrf()
    response = HTMLResponse(
        pages.sign_in(
            csrf, development=not host.settings.production, oidc=_oidc(host), message=f"Not signed in: {message}"
        ),
        401,
    )
    _cookie(response, PRE_COOKIE, csrf, host)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    response = HTMLResponse(pages.signed_out(idle=False))
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/signed-out")
async def signed_out(request: Request) -> Response:
    # A GET, for the automatic logoff's refresh: ending a session is the one thing it can do.
    response = HTMLResponse(pages.signed_out(idle=True))
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/reviews")
async def queue(
    request: Request, state: Annotated[str, Query(pattern="^(open|referred|closed|all)$")] = "open"
) -> Response:
    host = _host(request)
    wanted = None if state == "all" else state
    return await _page(
        request,
        lambda result, s, h: pages.queue(result[1], state, h.privacy.pseudonym, s.csrf, _idle(h)),
        host.privacy.reviews,
        PURPOSE,
        wanted,
    )


@router.get("/reviews/{seq}")
async def review(request: Request, seq: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    host = _host(request)
    return await _page(request, _review_page(), host.privacy.open_review, PURPOSE, seq)


@router.post("/reviews/{seq}/reveal")
async def reveal(request: Request, seq: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    host = _host(request)
    form = await _form(request)

    def open_and_reveal(request_id: str, subject: Any, purpose: str, seq: int) -> tuple[Any, str | None]:
        patient = host.privacy.reveal(request_id, subject, purpose, seq)
        return host.privacy.open_review(request_id, subject, purpose, seq), patient

    return await _page(
        request,
        lambda result, s, h: pages.review(result[0], result[1] or "", True, s.csrf, _idle(h)),
        open_and_reveal,
        PURPOSE,
        seq,
        form=form,
    )


@router.post("/reviews/{seq}/dispositions")
async def dispose(request: Request, seq: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    host = _host(request)
    form = await _form(request)

    def dispose_and_open(request_id: str, subject: Any, purpose: str, seq: int) -> Any:
        note = form.get("note", "").strip() or None
        host.privacy.dispose(request_id, subject, purpose, seq, form.get("disposition", ""), note)
        return host.privacy.open_review(request_id, subject, purpose, seq)

    return await _page(
        request, _review_page(message="Disposition recorded."), dispose_and_open, PURPOSE, seq,
        form=form,
    )  # fmt: skip


def _review_page(message: str = "") -> Callable[[Any, Session, Host], str]:
    def render(opened: Any, session: Session, h: Host) -> str:
        patient_id = opened.review.record.event.patient_id
        shown = h.privacy.pseudonym(patient_id) if patient_id else ""
        return pages.review(opened, shown, False, session.csrf, _idle(h), message)

    return render


@router.get("/report")
async def report_form(request: Request) -> Response:
    return await _page(request, lambda _r, s, h: pages.report_form(s.csrf, _idle(h)), None)


@router.post("/report")
async def report(request: Request) -> Response:
    host = _host(request)
    form = await _form(request)

    def read(request_id: str, subject: Any, purpose: str) -> Any:
        patient_id = form.get("patient_id", "").strip()
        if not PATIENT_ID.match(patient_id):
            raise InvalidRequest("a patient id is 1 to 64 letters, digits, hyphens and dots")
        try:
            since, until = timestamp(form.get("from") or None, ""), timestamp(form.get("to") or None, END_OF_TIME)
        except ValueError as exc:
            raise InvalidRequest("from and to must be ISO 8601 dates or date-times") from exc
        return host.privacy.access_report(request_id, subject, patient_id, purpose, since, until)

    return await _page(request, lambda r, s, h: pages.report_form(s.csrf, _idle(h), r), read, PURPOSE, form=form)


@router.get("/chain")
async def chain(request: Request) -> Response:
    host = _host(request)
    return await _page(request, lambda r, s, h: pages.chain(r, s.csrf, _idle(h)), host.privacy.chain_status, PURPOSE)
