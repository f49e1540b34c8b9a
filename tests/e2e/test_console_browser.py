"""The console in a real browser: Debian's chromium, headless, driven through chromium-driver. A compliance
officer signs in, opens a break-the-glass access from the queue, reveals the patient and disposes of it;
the disposition is on the chain and `wardfn audit verify` stays green; a clinician's token sees nothing.

Screenshots of each page go to a temporary directory, or to WARDFN_CONSOLE_SCREENSHOTS (`make
console-screenshots` writes docs/console/, which docs/console.md shows)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import WARDFN, ServerProcess
from tests.webdriver import Browser

pytestmark = pytest.mark.components

REASON = "found unresponsive in the car park"
TAB, ENTER = "\ue004", "\ue007"


@pytest.fixture(scope="module")
def server(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("console"), patients=12)
    yield process
    process.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    opened = Browser()
    yield opened
    opened.close()


def test_an_officer_disposes_of_a_break_the_glass_access_in_the_browser(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("WARDFN_CONSOLE_SCREENSHOTS") or tmp_path)
    store = server.open_store()
    try:
        pid = store.list_patients(1)[0]["id"]
    finally:
        store.close()
    glass = httpx.get(
        f"{server.url}/v1/patients/{pid}/summary",
        params={"purpose": "ETREAT"},
        headers={**server.headers("rn-hale", "nurse"), "X-Break-Glass-Reason": REASON},
        timeout=30,
    )
    assert glass.status_code == 200, glass.text
    log = server.open_audit()
    try:
        [seq] = [r.seq for r in log.records(limit=100_000) if r.event.request_id == glass.headers["x-request-id"]]
    finally:
        log.close()

    browser.get(f"{server.url}/console/")
    assert "Sign in" in browser.title
    browser.screenshot(shots / "sign-in.png")
    # From the keyboard alone: Tab past the skip link to the token field, type, Tab to the button, Enter.
    browser.keys(TAB + TAB)
    assert browser.active_id() == "token"
    browser.keys(server.token("co-ramos", "compliance_officer") + TAB + ENTER)
    browser.until_title("Review queue")
    assert browser.url.endswith("/console/reviews")
    assert f"Review {seq}" in browser.text("table")
    assert pid not in browser.source() and "car park" not in browser.source()  # pseudonymised, sealed
    browser.screenshot(shots / "queue.png")

    browser.click(f"a[href='/console/reviews/{seq}']")
    browser.until_title(f"Review {seq}")
    assert browser.text("#patient").startswith("pz-") and REASON in browser.source()
    browser.screenshot(shots / "review.png")
    browser.click(f"form[action='/console/reviews/{seq}/reveal'] button")
    browser.until(lambda: browser.text("#patient") == pid, "the revealed patient")
    assert pid not in browser.url  # revealed in the page, never in a URL

    browser.click("#d-justified")
    browser.type("#note", "cardiac arrest in the car park; the nurse was first on scene")
    browser.click(f"form[action='/console/reviews/{seq}/dispositions'] button")
    browser.until(lambda: "Disposition recorded." in browser.source(), "the disposition recorded")
    assert "justified</strong> by co-ramos (in force)" in browser.source()
    browser.screenshot(shots / "disposed.png")

    browser.get(f"{server.url}/console/report")
    browser.type("#patient_id", pid)
    browser.click("form[action='/console/report'] button")
    browser.until(lambda: "nurse" in browser.text("table"), "the access report's table")
    report = browser.text("table")
    assert "nurse" in report and "reveal" in report
    browser.screenshot(shots / "report.png")

    browser.get(f"{server.url}/console/chain")
    assert "Intact:" in browser.source()
    browser.screenshot(shots / "chain.png")

    # The disposition is an audit record on the chain, and the chain verifies.
    log = server.open_audit()
    try:
        dispositions = [r for r in log.records(limit=100_000) if r.event.function == "review:disposition"]
    finally:
        log.close()
    assert [(d.event.subject_id, d.event.outcome) for d in dispositions] == [("co-ramos", "justified")]
    done = subprocess.run([str(WARDFN), "audit", "verify"], env=server.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit chains intact" in done.stdout

    # Signing out, then in with a clinician's token: the console shows nothing.
    browser.click("form[action='/console/sign-out'] button")
    browser.until_title("Signed out")
    browser.get(f"{server.url}/console/")
    browser.until_title("Sign in")
    browser.type("#token", server.token("dr-grey", "physician"))
    browser.click("form[action='/console/sign-in'] button")
    browser.until_title("Error 403")
    assert "Refused by policy" in browser.source() and f"Review {seq}" not in browser.source()
    browser.screenshot(shots / "refused.png")
