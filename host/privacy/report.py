"""A patient's access report: every record of the trail that touched their data, as the patient may see it.

A right-of-access report (GDPR Article 15; HIPAA's right of access, 164.524), not a 164.528
accounting of disclosures: it lists accesses inside the host, not disclosures to third parties.
A search that matched the patient is listed without its query or its other results; a
break-the-glass reason is never in the report, whoever reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from host.types import AuditRecord

# The function names of the privacy office's own records.
REPORT_FUNCTION = "privacy:access-report"
REVEAL_FUNCTION = "privacy:reveal"

KINDS = ("access", "search", "report", "reveal")
# The upper bound of an open period: after every ISO timestamp the trail writes.
END_OF_TIME = "9999-12-31T23:59:59.999999Z"


@dataclass(frozen=True)
class AccessEntry:
    """One access to the patient's data: `kind` is access (a function on their record), search (a
    directory search matched them), report (someone read this report) or reveal (a compliance officer
    revealed whom a review was about)."""

    seq: int
    ts: str
    kind: str
    function: str | None
    purpose: str | None
    role: str | None
    org_unit: str | None
    subject_id: str | None
    allowed: bool | None
    outcome: str
    break_glass: bool


def timestamp(text: str | datetime | None, default: str) -> str:
    """An ISO date or date-time (UTC if it names no zone) in the trail's own timestamp form."""
    if text is None or text == "":
        return default
    if isinstance(text, datetime):
        moment = text
    else:
        try:
            is_day = "T" not in text and " " not in text
            moment = _midnight(date.fromisoformat(text)) if is_day else datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError("not an ISO 8601 date or date-time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # a zone that moves year 1 or 9999 off the calendar: the trail's very ends
        return "" if moment.year < 2 else END_OF_TIME
    # isoformat pads the year to four digits (strftime's %Y does not for years before 1000).
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def entries(
    records: Iterable[AuditRecord],
    patient_id: str,
    open_query: Callable[[str], str],
    *,
    purpose: str | None = None,
    exclude_seq: int | None = None,
    show_subjects: bool = True,
) -> list[AccessEntry]:
    """The records that touched `patient_id`, as report entries; `records` come from `AuditLog.concerning`."""
    found: list[AccessEntry] = []
    for record in records:
        event = record.event
        if record.seq == exclude_seq or (purpose is not None and event.purpose != purpose):
            continue
        if event.patient_id == patient_id:
            kind = {REPORT_FUNCTION: "report", REVEAL_FUNCTION: "reveal"}.get(event.function or "", "access")
        elif (
            event.patient_id is None
            and event.query is not None
            and _search_matched(event.query, patient_id, open_query)
        ):
            kind = "search"
        else:
            continue
        found.append(
            AccessEntry(
                seq=record.seq,
                ts=record.timestamp,
                kind=kind,
                function=event.function,
                purpose=event.purpose,
                role=event.role,
                org_unit=event.org_unit,
                subject_id=event.subject_id if show_subjects else None,
                allowed=event.allowed,
                outcome=event.outcome,
                break_glass=event.break_glass,
            )
        )
    return found


def _search_matched(sealed: str, patient_id: str, open_query: Callable[[str], str]) -> bool:
    """True if the record's sealed query holds directory searches and one of them matched the patient."""
    try:
        query = json.loads(open_query(sealed))
    except ValueError:
        return False
    searches = query.get("searches") if isinstance(query, dict) else None
    if not isinstance(searches, list):
        return False
    return any(isinstance(s, dict) and patient_id in (s.get("matched") or []) for s in searches)
