"""Walking an export page by page, as a client would: every page timed, every resource counted.

Used by `wardfn bench history` to show that the exports of the largest chart complete page by page
(issue 13, item 4): `fhir_export` links to its next page (`link` relation `next`), `deidentify`
gives `next`; both take it back as the `page` argument.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from host.bench.stats import summarise

# A walk that has not ended after this many pages is reported as such, not followed forever.
MAX_PAGES = 1000


def walk(
    client: httpx.Client,
    function: str,
    headers: dict[str, str],
    invoke: dict[str, Any],
    count: int,
    expected: dict[str, int],
) -> dict[str, Any]:
    """Every page of `function`'s answer for one patient: pages, resources, time, and whether they add up.

    `expected` maps each type the function reads to the patient's count of it; a type the decision
    withheld (named on every page) is not expected."""
    page: str | None = None
    withheld: set[str] = set()
    timings: list[float] = []
    received = 0
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    while len(timings) < MAX_PAGES:
        args: dict[str, Any] = {"_count": count, **({"page": page} if page else {})}
        began = time.perf_counter()
        response = client.post(f"/v1/functions/{function}/invoke", headers=headers, json={**invoke, "args": args})
        timings.append((time.perf_counter() - began) * 1000)
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        if not response.is_success:
            break
        body = response.json()["result"]  # the invoke API wraps the function's answer
        received += _resources(function, body)
        withheld |= _withheld(function, body)
        page = _next(function, body)
        if page is None:
            break
    wanted = sum(n for kind, n in expected.items() if kind not in withheld)
    return {
        "function": function,
        "page_count": count,
        "pages": len(timings),
        "status": statuses,
        "resources": received,
        "expected_resources": wanted,
        "withheld": sorted(withheld),
        "complete": page is None and received == wanted and set(statuses) == {"200"},
        "total_ms": round((time.perf_counter() - started) * 1000, 1),
        "page_ms": summarise(timings),
    }


def _resources(function: str, body: dict[str, Any]) -> int:
    if function == "fhir_export":
        return sum(1 for e in body.get("entry", []) if e.get("resource", {}).get("resourceType") != "OperationOutcome")
    return len(body.get("resources", []))


def _withheld(function: str, body: dict[str, Any]) -> set[str]:
    if function == "fhir_export":
        return {
            kind
            for entry in body.get("entry", [])
            if entry.get("resource", {}).get("resourceType") == "OperationOutcome"
            for issue in entry["resource"].get("issue", [])
            if issue.get("code") == "suppressed"
            for kind in issue.get("expression", [])
        }
    return set(body.get("withheld") or {})


def _next(function: str, body: dict[str, Any]) -> str | None:
    if function == "fhir_export":
        return next((link["url"] for link in body.get("link", []) if link.get("relation") == "next"), None)
    found = body.get("next")
    return str(found) if found else None
