"""What one attempt is: the request a caller makes, what it is answered, and the one audit record it leaves.

The orchestrator (`host.service`) takes an `Invocation` or an `AuditRead` and answers with its
result; whatever happens, `audit_event` makes the attempt's one record from how far it got.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from host.policy.document import input_hash
from host.types import AuditEvent, AuditRecord, Decision, DirectoryQuery, Subject


@dataclass(frozen=True)
class Invocation:
    """One call of a function, as an authenticated caller asked for it."""

    request_id: str
    subject: Subject
    function: str
    patient_id: str | None
    purpose: str
    args: dict[str, Any] = field(default_factory=dict)
    break_glass_reason: str | None = None


@dataclass(frozen=True)
class InvocationResult:
    """The function's answer, released only once `audit_seq`, its audit record, is durable."""

    request_id: str
    function: str
    version: str
    decision_id: str
    audit_seq: int
    body: Any
    # The decision let the caller break the glass: the answer says so, as its audit record does.
    break_glass: bool = False


@dataclass(frozen=True)
class AuditRead:
    """A page of the audit trail, as an authenticated caller asked for it: up to `limit` records after `after_seq`."""

    request_id: str
    subject: Subject
    purpose: str
    after_seq: int = 0
    limit: int = 100


@dataclass(frozen=True)
class Oversight:
    """An act on the audit trail rather than on a record (reading it, a patient's access report, a
    break-the-glass review): decided by the policy and audited before anything is read.

    `query` is plain text for the record's sealed query (what was reviewed, a disposition's note);
    `outcome` is what the record says when the act is allowed (`ok`, or a disposition's code).
    """

    request_id: str
    subject: Subject
    action: str
    function: str
    purpose: str
    patient_id: str | None = None
    query: str | None = None
    outcome: str = "ok"


@dataclass(frozen=True)
class AuditReadResult:
    """The records read, and `audit_seq`: the record of this read itself, written before any was read."""

    audit_seq: int
    records: tuple[AuditRecord, ...]


@dataclass(frozen=True)
class Sealed:
    """An attempt's free text that may name a patient, sealed for its audit record."""

    break_glass_reason: str | None = None
    query: str | None = None


@dataclass(frozen=True)
class Question:
    """What the policy is asked, and its hash for the decision log."""

    input: dict[str, Any]
    hash: str

    @classmethod
    def of(cls, policy_input: dict[str, Any]) -> Question:
        return cls(policy_input, input_hash(policy_input))


class Searches:
    """The directory queries one invocation made, and the patient ids each matched."""

    def __init__(self) -> None:
        self._made: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def made(self) -> int:
        return len(self._made)

    def add(self, query: DirectoryQuery, matched: list[str]) -> None:
        entry = {"query": dataclasses.asdict(query), "matched": matched}
        with self._lock:
            self._made.append(entry)

    def as_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._made)


def audit_event(
    request_id: str,
    subject: Subject | None,
    function: str | None,
    patient_id: str | None,
    purpose: str | None,
    *,
    outcome: str,
    started: float,
    function_version: str | None = None,
    sealed: Sealed | None = None,
    question: Question | None = None,
    decision: Decision | None = None,
) -> AuditEvent:
    """The one audit record of an attempt: who asked for what, and how far it got (None where it did not)."""
    break_glass = decision is not None and decision.break_glass
    # A reason given is an attempt to break the glass, whatever the decision: refused, it is reviewed too.
    attempted = break_glass or (sealed is not None and sealed.break_glass_reason is not None)
    return AuditEvent(
        request_id=request_id,
        subject_id=subject.id if subject else None,
        role=subject.role if subject else None,
        function=function,
        patient_id=patient_id,
        purpose=purpose,
        decision_id=decision.id if decision else None,
        allowed=decision.allow if decision else None,
        reasons=decision.reasons if decision else (),
        outcome=outcome,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        policy_revision=decision.revision if decision else None,
        input_hash=decision.input_hash if decision else question.hash if question else None,
        break_glass=break_glass,
        # Every break-the-glass attempt, allowed or refused, is for a person to review, with its reason.
        review=attempted,
        break_glass_reason=sealed.break_glass_reason if sealed and attempted else None,
        function_version=function_version,
        query=sealed.query if sealed else None,
        org_unit=subject.org_unit if subject else None,
    )
