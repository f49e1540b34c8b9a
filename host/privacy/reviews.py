"""The break-the-glass review queue, folded from the trail: each flagged record and its dispositions.

Every break-the-glass access, and every break-the-glass attempt refused, is flagged for review when
it is recorded. A disposition is an audit record of its own (`DISPOSITION_FUNCTION`, its outcome
the disposition's code, its sealed query naming the record reviewed and the officer's note), so the
queue is append-only: a later disposition supersedes an earlier one and both stay on the chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from host.types import AuditRecord

DISPOSITION_FUNCTION = "review:disposition"
OPEN_FUNCTION = "review:open"
DISPOSITIONS = ("justified", "not_justified", "referred")
# A review's state: open until disposed of; referred waits on someone outside the office.
STATES = ("open", "referred", "closed")


@dataclass(frozen=True)
class Disposition:
    """One disposition as its audit record holds it."""

    seq: int
    ts: str
    review_of: int
    code: str
    by: str | None
    note: str | None


@dataclass(frozen=True)
class Review:
    """A flagged record and its dispositions, newest last; the newest is the one in force."""

    record: AuditRecord
    dispositions: tuple[Disposition, ...] = field(default_factory=tuple)

    @property
    def seq(self) -> int:
        return self.record.seq

    @property
    def current(self) -> Disposition | None:
        return self.dispositions[-1] if self.dispositions else None

    @property
    def state(self) -> str:
        current = self.current
        if current is None:
            return "open"
        return "referred" if current.code == "referred" else "closed"


def disposition_query(review_of: int, note: str | None) -> str:
    """The plain text a disposition's record seals as its query."""
    return json.dumps({"review_of": review_of, "note": note}, sort_keys=True, separators=(",", ":"))


def read_disposition(record: AuditRecord, open_query: Callable[[str], str]) -> Disposition | None:
    """The disposition an allowed disposition record holds; None for a refused attempt."""
    event = record.event
    if event.function != DISPOSITION_FUNCTION or event.outcome not in DISPOSITIONS or event.query is None:
        return None
    body = json.loads(open_query(event.query))
    note = body.get("note")
    return Disposition(
        seq=record.seq,
        ts=record.timestamp,
        review_of=int(body["review_of"]),
        code=event.outcome,
        by=event.subject_id,
        note=note if isinstance(note, str) else None,
    )


def fold(flagged: Iterable[AuditRecord], dispositions: Iterable[Disposition]) -> list[Review]:
    """Each flagged record with its dispositions, oldest record first."""
    by_review: dict[int, list[Disposition]] = {}
    for disposition in sorted(dispositions, key=lambda d: d.seq):
        by_review.setdefault(disposition.review_of, []).append(disposition)
    return [Review(record, tuple(by_review.get(record.seq, ()))) for record in flagged]
