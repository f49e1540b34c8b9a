"""The console's pages as HTML, every value escaped. Plain string templates: no template engine to add."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from html import escape

from host.privacy.office import AccessReport, ChainStatus, OpenedReview
from host.privacy.reviews import Review

NAV = (("/console/reviews", "Review queue"), ("/console/report", "Access report"), ("/console/chain", "Audit chain"))


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, *, csrf: str | None = None, idle_s: int | None = None) -> str:
    """A whole page. Signed in (`csrf` given): the navigation, sign-out, and the automatic logoff."""
    head = ""
    nav = ""
    if csrf is not None and idle_s is not None:
        # Automatic logoff without script: the page leaves for the sign-out page when idle_s pass.
        head = f'<meta http-equiv="refresh" content="{idle_s};url=/console/signed-out">'
        links = "".join(f'<li><a href="{href}">{e(label)}</a></li>' for href, label in NAV)
        nav = (
            f'<nav aria-label="Console"><ul>{links}</ul>'
            f'<form method="post" action="/console/sign-out">{_csrf(csrf)}'
            '<button type="submit">Sign out</button></form></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{head}<title>{e(title)} · wardfn privacy office</title>"
        '<link rel="stylesheet" href="/console/static/console.css"></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand">wardfn privacy office</p>{nav}</header>'
        f'<main id="main"><h1>{e(title)}</h1>{body}</main></body></html>'
    )


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def sign_in(csrf: str, *, development: bool, oidc: bool, message: str | None = None) -> str:
    note = f'<p role="alert" class="error">{e(message)}</p>' if message else ""
    provider = (
        '<p><a class="button" href="/console/oidc/start">Sign in with your identity provider</a></p>' if oidc else ""
    )
    if not development:
        body = provider or (
            "<p>No identity provider is configured (WARDFN_CONSOLE_OIDC_ISSUER), and a pasted token is accepted "
            "only in development: nobody can sign in.</p>"
        )
        return layout("Sign in", note + body)
    body = (
        f"{note}{provider}<p>Development only: paste a bearer token "
        "(<code>wardfn token --role compliance_officer</code>).</p>"
        f'<form method="post" action="/console/sign-in">{_csrf(csrf)}'
        '<label for="token">Bearer token</label>'
        '<textarea id="token" name="token" rows="4" cols="60" required autocomplete="off" spellcheck="false">'
        '</textarea><button type="submit">Sign in</button></form>'
    )
    return layout("Sign in", body)


def signed_in() -> str:
    """The page the provider's redirect lands on: it moves on by itself, as a same-site navigation, so
    that the SameSite=Strict session cookie goes with it."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="0;url=/console/reviews"><title>Signed in</title></head>'
        '<body><main><p>Signed in. <a href="/console/reviews">Continue to the review queue</a>.</p></main>'
        "</body></html>"
    )


def signed_out(idle: bool) -> str:
    why = "You were signed out after a period of inactivity." if idle else "You are signed out."
    return layout("Signed out", f'<p>{why}</p><p><a href="/console/">Sign in again</a></p>')


def error(status: int, message: str, csrf: str | None, idle_s: int | None) -> str:
    return layout(f"Error {status}", f'<p role="alert" class="error">{e(message)}</p>', csrf=csrf, idle_s=idle_s)


def queue(reviews: Iterable[Review], state: str, pseudonym: Callable[[str], str], csrf: str, idle_s: int) -> str:
    rows = "".join(
        "<tr>"
        f'<td><a href="/console/reviews/{r.seq}">Review {r.seq}</a></td>'
        f"<td>{e(r.record.timestamp)}</td><td>{_age(r.record.timestamp)}</td>"
        f"<td>{e(r.record.event.subject_id)} ({e(r.record.event.role)})</td>"
        f"<td>{e(r.record.event.purpose)}</td><td>{_allowed(r.record.event.allowed)}</td>"
        f"<td>{e(pseudonym(r.record.event.patient_id) if r.record.event.patient_id else '')}</td>"
        f"<td>{e(r.state)}</td></tr>"
        for r in reviews
    )
    options = "".join(
        f'<option value="{s}"{" selected" if s == state else ""}>{s}</option>'
        for s in ("open", "referred", "closed", "all")
    )
    body = (
        '<form method="get" action="/console/reviews"><label for="state">Show reviews</label>'
        f'<select id="state" name="state">{options}</select><button type="submit">Show</button></form>'
        "<table><caption>Break-the-glass accesses and refused attempts, oldest first</caption>"
        '<thead><tr><th scope="col">Review</th><th scope="col">When (UTC)</th><th scope="col">Waiting</th>'
        '<th scope="col">Who</th><th scope="col">Purpose</th><th scope="col">Outcome</th>'
        '<th scope="col">Patient (pseudonym)</th><th scope="col">State</th></tr></thead>'
        f"<tbody>{rows or '<tr><td colspan=8>Nothing waits for review.</td></tr>'}</tbody></table>"
    )
    return layout("Review queue", body, csrf=csrf, idle_s=idle_s)


def review(opened: OpenedReview, patient: str, revealed: bool, csrf: str, idle_s: int, message: str = "") -> str:
    r = opened.review
    event = r.record.event
    history = "".join(
        f"<li>{e(d.ts)}: <strong>{e(d.code.replace('_', ' '))}</strong> by {e(d.by)}"
        f"{' (in force)' if d is r.current else ' (superseded)'}{': ' + e(d.note) if d.note else ''}</li>"
        for d in r.dispositions
    )
    reveal = (
        ""
        if revealed or not event.patient_id
        else f'<form method="post" action="/console/reviews/{r.seq}/reveal">{_csrf(csrf)}'
        '<button type="submit">Reveal the patient (audited)</button></form>'
    )
    choices = "".join(
        f'<div><input type="radio" id="d-{code}" name="disposition" value="{code}" required>'
        f'<label for="d-{code}">{label}</label></div>'
        for code, label in (("justified", "Justified"), ("not_justified", "Not justified"), ("referred", "Referred"))
    )
    status = f'<p role="status" class="notice">{e(message)}</p>' if message else ""
    body = (
        f"{status}<dl>"
        f"<dt>When (UTC)</dt><dd>{e(r.record.timestamp)}</dd>"
        f"<dt>Who</dt><dd>{e(event.subject_id)} ({e(event.role)})</dd>"
        f"<dt>Function</dt><dd>{e(event.function)}</dd><dt>Purpose</dt><dd>{e(event.purpose)}</dd>"
        f"<dt>Outcome</dt><dd>{_allowed(event.allowed)} ({e(event.outcome)})</dd>"
        f"<dt>Reason given</dt><dd>{e(opened.reason) or '<em>none</em>'}</dd>"
        f'<dt>Patient</dt><dd id="patient">{e(patient)}{"" if revealed else " (pseudonym)"}</dd>'
        f"<dt>State</dt><dd>{e(r.state)}</dd></dl>{reveal}"
        f"<h2>Dispositions</h2><ol>{history or '<li>None yet.</li>'}</ol>"
        f'<h2>Record a disposition</h2><form method="post" action="/console/reviews/{r.seq}/dispositions">'
        f"{_csrf(csrf)}<fieldset><legend>Disposition</legend>{choices}</fieldset>"
        '<label for="note">Note (required when not justified)</label>'
        '<textarea id="note" name="note" rows="3" cols="60" maxlength="4000"></textarea>'
        '<button type="submit">Record disposition</button></form>'
    )
    return layout(f"Review {r.seq}", body, csrf=csrf, idle_s=idle_s)


def report_form(csrf: str, idle_s: int, report: AccessReport | None = None) -> str:
    form = (
        f'<form method="post" action="/console/report">{_csrf(csrf)}'
        '<label for="patient_id">Patient id</label>'
        '<input id="patient_id" name="patient_id" required maxlength="64" pattern="[A-Za-z0-9.\\-]{1,64}" '
        'autocomplete="off">'
        '<label for="from">From (inclusive, ISO date)</label><input id="from" name="from" maxlength="40">'
        '<label for="to">To (exclusive, ISO date)</label><input id="to" name="to" maxlength="40">'
        '<button type="submit">Show the report</button></form>'
        "<p>A right-of-access report (GDPR Article 15, HIPAA 164.524), not a 164.528 accounting of "
        "disclosures. Reading it is audited and listed on the patient's own report.</p>"
    )
    table = ""
    if report is not None:
        rows = "".join(
            f"<tr><td>{e(x.ts)}</td><td>{e(x.kind)}</td><td>{e(x.function)}</td><td>{e(x.purpose)}</td>"
            f"<td>{e(x.subject_id)} ({e(x.role)})</td><td>{_allowed(x.allowed)}</td>"
            f"<td>{'yes' if x.break_glass else ''}</td></tr>"
            for x in report.entries
        )
        table = (
            f"<table><caption>Accesses to patient {e(report.patient_id)}</caption>"
            '<thead><tr><th scope="col">When (UTC)</th><th scope="col">Kind</th><th scope="col">Function</th>'
            '<th scope="col">Purpose</th><th scope="col">Who</th><th scope="col">Outcome</th>'
            '<th scope="col">Break-the-glass</th></tr></thead>'
            f"<tbody>{rows or '<tr><td colspan=7>No access in this period.</td></tr>'}</tbody></table>"
        )
    return layout("Access report", form + table, csrf=csrf, idle_s=idle_s)


def chain(status: ChainStatus, csrf: str, idle_s: int) -> str:
    c = status.chain
    verdict = (
        f'<p class="ok">Intact: {c.checked} records verified.</p>'
        if c.ok
        else f'<p role="alert" class="error">Broken at record {e(c.first_bad_seq)}: {e(c.problem)}</p>'
    )
    k = status.checkpoints
    if k is None:
        points = "<p>Checkpoints: no verification key on this host.</p>"
    elif not k.ok:
        points = f'<p role="alert" class="error">Checkpoints do not hold: {e(k.problem)}</p>'
    elif k.latest is None:
        points = "<p>No checkpoint signed yet.</p>"
    else:
        points = (
            f"<p>Checkpoints hold: {k.checkpoints}. The newest covers {len(k.latest.heads)} chains' heads "
            f"(the trail's newest record is {status.head_seq}), "
            f"signed at {e(k.latest.ts)} ({_age(k.latest.ts)} ago).</p>"
        )
    return layout("Audit chain", verdict + points, csrf=csrf, idle_s=idle_s)


def _allowed(allowed: bool | None) -> str:
    return "allowed" if allowed else "refused" if allowed is False else "error"


def _age(ts: str) -> str:
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
