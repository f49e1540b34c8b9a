"""A patient's access report from trail records: which records are theirs, what each entry shows."""

from __future__ import annotations

import json

import pytest

from host.privacy.report import END_OF_TIME, REPORT_FUNCTION, REVEAL_FUNCTION, entries, timestamp
from host.types import AuditEvent, AuditRecord


def _record(
    seq: int, patient_id: str | None, function: str = "patient_lookup", query: str | None = None, **kw: object
) -> AuditRecord:
    event = AuditEvent(
        request_id=f"r{seq}", subject_id=kw.pop("subject_id", "dr-a"), role="physician", function=function,
        patient_id=patient_id, purpose="TREAT", decision_id="d", allowed=True, reasons=(), outcome="ok",
        latency_ms=1.0, query=query, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return AuditRecord(seq, f"2026-01-01T00:00:{seq:02d}.000000Z", event, "0" * 64, "1" * 64)


def _search(matched: list[str]) -> str:
    return json.dumps({"args": {"name": "Ada"}, "searches": [{"query": {"name": "Ada"}, "matched": matched}]})


def test_the_records_naming_the_patient_and_the_searches_that_matched_them() -> None:
    records = [
        _record(1, "p-1"),
        _record(2, "p-2"),
        _record(3, None, "patient_search", query=_search(["p-2", "p-1"])),
        _record(4, None, "patient_search", query=_search(["p-2"])),
        _record(5, None, "patient_search", query=json.dumps({"name": "plain args, no searches"})),
        _record(6, "p-1", REVEAL_FUNCTION),
        _record(7, "p-1", REPORT_FUNCTION),
        _record(8, "p-1", REPORT_FUNCTION),
        _record(9, "p-1", break_glass=True, break_glass_reason="sealed"),
    ]
    found = entries(records, "p-1", lambda sealed: sealed, exclude_seq=8, show_subjects=False)
    assert [(e.seq, e.kind) for e in found] == [
        (1, "access"),
        (3, "search"),
        (6, "reveal"),
        (7, "report"),
        (9, "access"),
    ]
    assert all(e.subject_id is None for e in found) and found[-1].break_glass
    shown = entries(records, "p-1", lambda sealed: sealed)
    assert shown[0].subject_id == "dr-a" and len(shown) == 6


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ""),
        ("2026-12-02", "2026-12-02T00:00:00.000000Z"),
        ("2026-12-02T03:04:05+01:00", "2026-12-02T02:04:05.000000Z"),
        ("0001-01-01", "0001-01-01T00:00:00.000000Z"),  # four digits: compared as text with the trail's
        ("0001-01-01T00:00+05:00", ""),  # before the calendar starts in UTC: the trail's start
        ("9999-12-31T23:00-05:00", END_OF_TIME),
    ],
)
def test_a_period_bound_becomes_the_trails_own_timestamp_form(given: str | None, expected: str) -> None:
    assert timestamp(given, "") == expected


def test_a_bound_that_is_not_a_date_is_refused() -> None:
    with pytest.raises(ValueError):
        timestamp("yesterday", "")
