"""The review queue folded from flagged records and disposition records: append-only, the newest in force."""

from __future__ import annotations

from host.privacy.reviews import DISPOSITION_FUNCTION, disposition_query, fold, read_disposition
from host.types import AuditEvent, AuditRecord


def _record(
    seq: int, function: str, outcome: str = "ok", query: str | None = None, subject: str = "co-1"
) -> AuditRecord:
    event = AuditEvent(
        request_id=f"r{seq}", subject_id=subject, role="compliance_officer", function=function, patient_id=None,
        purpose="HCOMPL", decision_id="d", allowed=outcome != "policy_denied", reasons=(), outcome=outcome,
        latency_ms=1.0, query=query,
    )  # fmt: skip
    return AuditRecord(seq, f"2026-01-01T00:00:{seq:02d}.000000Z", event, "0" * 64, "1" * 64)


def test_dispositions_supersede_and_refusals_do_not_count() -> None:
    flagged = [_record(1, "patient_lookup", subject="rn-a"), _record(2, "patient_lookup", subject="rn-b")]
    disposition_records = [
        _record(5, DISPOSITION_FUNCTION, "not_justified", disposition_query(1, "no emergency")),
        _record(6, DISPOSITION_FUNCTION, "policy_denied", disposition_query(2, None)),  # refused: no disposition
        _record(7, DISPOSITION_FUNCTION, "referred", disposition_query(1, None), subject="co-2"),
    ]
    dispositions = [d for d in (read_disposition(r, lambda s: s) for r in disposition_records) if d is not None]
    first, second = fold(flagged, dispositions)
    assert first.state == "referred" and [d.code for d in first.dispositions] == ["not_justified", "referred"]
    assert first.current is not None and first.current.by == "co-2" and first.dispositions[0].note == "no emergency"
    assert second.state == "open" and second.current is None
