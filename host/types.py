"""Plain values passed between the host's services. Imports nothing from the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Subject:
    """Who is calling, as the verified token says."""

    id: str
    role: str


@dataclass(frozen=True)
class Decision:
    """A policy engine's answer. `allow` is already deny-wins: false if any deny rule matched."""

    id: str
    allow: bool
    reasons: tuple[str, ...] = ()
    engine: str = ""


@dataclass(frozen=True)
class Scope:
    """What one invocation may read: the patient and resource types the decision allowed."""

    patient_id: str | None
    resource_types: frozenset[str] = frozenset()
    directory: bool = False


@dataclass(frozen=True)
class AuditEvent:
    """One invocation attempt, allowed or not, as the audit trail records it. Never holds a token."""

    request_id: str
    subject_id: str | None
    role: str | None
    function: str | None
    patient_id: str | None
    purpose: str | None
    decision_id: str | None
    allowed: bool | None
    reasons: tuple[str, ...]
    outcome: str
    latency_ms: float
    function_version: str | None = None
    query: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """An audit event as stored: its place in the chain and the hashes that bind it there."""

    seq: int
    timestamp: str
    event: AuditEvent
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of checking the audit chain."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass
class Invocation:
    """A function's answer, parsed, plus what the host observed while it ran."""

    body: Any
    function_version: str
    instantiate_ms: float
    call_ms: float
    log_lines: list[str] = field(default_factory=list)
