"""The privacy office's acts, each decided by the policy and audited before anything is read."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from host.attempts import Oversight
from host.audit.trail import AuditLog
from host.errors import InvalidRequest, PolicyDenied, ReviewNotFound
from host.privacy.report import END_OF_TIME, REPORT_FUNCTION, REVEAL_FUNCTION, AccessEntry, entries
from host.privacy.reviews import (
    DISPOSITION_FUNCTION,
    DISPOSITIONS,
    OPEN_FUNCTION,
    Disposition,
    Review,
    disposition_query,
    fold,
    read_disposition,
)
from host.service import AUDIT_QUERY_PURPOSE, AUDIT_READ_ACTION, AUDIT_REASON_PURPOSE, InvocationService
from host.store.resources import ResourceStore
from host.types import AuditRecord, CheckpointReport, Subject, VerifyReport

REPORT_ACTION = "read-access-report"
REVEAL_ACTION = "reveal-patient"
REVIEW_ACTION = "review-break-glass"
LIST_FUNCTION = "review:list"
VERIFY_FUNCTION = "audit:verify"
PAGE = 1000
OWN_ACCESS = "no one disposes of a review of their own access"
QUEUE_CACHE_S = 15.0


@dataclass(frozen=True)
class AccessReport:
    """A patient's access report; `audit_seq` is the record of this read, written before any was read."""

    patient_id: str
    since: str
    until: str
    audit_seq: int
    generated: str
    entries: tuple[AccessEntry, ...]


@dataclass(frozen=True)
class ChainStatus:
    """The chain verified now, its signed checkpoints (None where the host has no key to check them)."""

    chain: VerifyReport
    checkpoints: CheckpointReport | None
    head_seq: int
    audit_seq: int


@dataclass(frozen=True)
class OpenedReview:
    """A review as an officer opened it: the flagged record, its dispositions, and its unsealed reason."""

    review: Review
    reason: str | None
    audit_seq: int


class PrivacyOffice:
    """Access reports and the review queue, over the trail; every act goes through `service.oversee`."""

    def __init__(
        self,
        service: InvocationService,
        audit: AuditLog,
        store: ResourceStore,
        *,
        show_subjects: bool = False,
        pseudonym: Callable[[str], str] | None = None,
        checkpoints: Callable[[], CheckpointReport] | None = None,
    ) -> None:
        self._service = service
        self._audit = audit
        self._store = store
        self._show_subjects = show_subjects
        self._checkpoints = checkpoints
        self._queue_read: tuple[float, int, float | None] | None = None  # (when, open reviews, oldest's time)
        # The review's own pseudonym key, never the research exports': the two cannot be joined.
        self.pseudonym = pseudonym or (lambda _patient_id: "pz-unavailable")

    def chain_status(self, request_id: str, subject: Subject, purpose: str) -> ChainStatus:
        """The audit chain verified now and its checkpoints checked: for compliance officers, audited first."""
        own = self._service.oversee(Oversight(request_id, subject, AUDIT_READ_ACTION, VERIFY_FUNCTION, purpose))
        checkpoints = self._checkpoints() if self._checkpoints is not None else None
        return ChainStatus(self._audit.verify(), checkpoints, self._audit.head()[0], own.seq)

    def access_report(
        self, request_id: str, subject: Subject, patient_id: str, purpose: str, since: str, until: str,
    ) -> AccessReport:  # fmt: skip
        """Every access to `patient_id`'s data in [since, until), this read excepted."""
        own = self._service.oversee(Oversight(request_id, subject, REPORT_ACTION, REPORT_FUNCTION, purpose, patient_id))
        found: list[AccessEntry] = []
        after = 0
        # A compliance officer sees who; a patient sees roles unless the settings name subjects.
        show = self._show_subjects or purpose == "HCOMPL"
        while True:
            page = self._audit.concerning(patient_id, since, until, PAGE, after)
            found += entries(page, patient_id, self._open, exclude_seq=own.seq, show_subjects=show)
            if len(page) < PAGE:
                break
            after = page[-1].seq
        return AccessReport(patient_id, since, until or END_OF_TIME, own.seq, _now(), tuple(found))

    def reviews(self, request_id: str, subject: Subject, purpose: str, state: str | None) -> tuple[int, list[Review]]:
        """The review queue (reading it is audited), oldest first, in one state or all."""
        own = self._service.oversee(Oversight(request_id, subject, REVIEW_ACTION, LIST_FUNCTION, purpose))
        return own.seq, [r for r in self._all_reviews() if state is None or r.state == state]

    def open_review(self, request_id: str, subject: Subject, purpose: str, seq: int) -> OpenedReview:
        """One review, its sealed reason unsealed for the officer: audited before the reason is read."""
        own = self._service.oversee(
            Oversight(request_id, subject, REVIEW_ACTION, OPEN_FUNCTION, purpose, query=disposition_query(seq, None)),
            check=lambda: self._check_flagged(seq),
        )
        review = self._review(seq)
        sealed = review.record.event.break_glass_reason
        reason = self._store.open_text(sealed, AUDIT_REASON_PURPOSE) if sealed else None
        return OpenedReview(review, reason, own.seq)

    def dispose(
        self, request_id: str, subject: Subject, purpose: str, seq: int, code: str, note: str | None
    ) -> AuditRecord:
        """Record a disposition of review `seq`: an audit record, refused (and audited) for one's own access."""
        if code not in DISPOSITIONS:
            raise InvalidRequest(f"a disposition is one of {', '.join(DISPOSITIONS)}")
        if code == "not_justified" and not note:
            raise InvalidRequest("a disposition of not_justified needs a note")

        def check() -> None:
            record = self._flagged(seq)
            if record.event.subject_id is not None and record.event.subject_id == subject.id:
                raise PolicyDenied([OWN_ACCESS], "")

        act = Oversight(
            request_id, subject, REVIEW_ACTION, DISPOSITION_FUNCTION, purpose,
            query=disposition_query(seq, note), outcome=code,
        )  # fmt: skip
        return self._service.oversee(act, check)

    def reveal(self, request_id: str, subject: Subject, purpose: str, seq: int) -> str | None:
        """Whom review `seq` is about, for a compliance officer: the reveal is on the patient's access report."""
        patient_id = self._flagged(seq).event.patient_id
        if patient_id is None:
            return None
        self._service.oversee(Oversight(request_id, subject, REVEAL_ACTION, REVEAL_FUNCTION, purpose, patient_id))
        return patient_id

    def queue(self) -> tuple[int, float]:
        """The open reviews and the age in seconds of the oldest (0 when none): for /metrics, not audited
        (counts and an age, no patient data). Read from the trail at most every QUEUE_CACHE_S: without an
        index on the function column, finding the dispositions scans the trail (about 120 ms at 200,000
        records on SQLite, measured), too much for every scrape of every process."""
        now = time.monotonic()
        if self._queue_read is None or now - self._queue_read[0] > QUEUE_CACHE_S:
            waiting = [r for r in self._all_reviews() if r.state == "open"]
            oldest = (
                datetime.strptime(waiting[0].record.timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                if waiting
                else None
            )
            self._queue_read = (now, len(waiting), oldest)
        _, size, since = self._queue_read
        return size, max(0.0, time.time() - since) if since is not None else 0.0

    def _review(self, seq: int) -> Review:
        return fold([self._flagged(seq)], self._dispositions())[0]

    def _check_flagged(self, seq: int) -> None:
        self._flagged(seq)

    def _flagged(self, seq: int) -> AuditRecord:
        found = self._audit.flagged(1, seq - 1) if seq > 0 else []
        if not found or found[0].seq != seq:
            raise ReviewNotFound(f"no record {seq} waits for review")
        return found[0]

    def _all_reviews(self) -> list[Review]:
        flagged = pages(self._audit.flagged)
        return fold(flagged, self._dispositions())

    def _dispositions(self) -> list[Disposition]:
        records = pages(lambda limit, after: self._audit.of_function(DISPOSITION_FUNCTION, limit, after))
        return [d for d in (read_disposition(r, self._open) for r in records) if d is not None]

    def _open(self, sealed: str) -> str:
        return self._store.open_text(sealed, AUDIT_QUERY_PURPOSE)


def pages(read: Callable[[int, int], list[AuditRecord]]) -> list[AuditRecord]:
    found: list[AuditRecord] = []
    while True:
        page = read(PAGE, found[-1].seq if found else 0)
        found += page
        if len(page) < PAGE:
            return found


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
