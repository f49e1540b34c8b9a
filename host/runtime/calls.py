"""What goes into one call of a function and what comes out of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host.types import Scope

RecordReader = Callable[[str, str], list[str]]
# (patient, type, FHIR search parameters) -> the matching bodies; InvalidRequest for parameters it does not support.
RecordQuery = Callable[[str, str, list[tuple[str, str]]], list[str]]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-invocation limits, from the settings and the function's manifest."""

    deadline_ms: int
    memory_bytes: int
    output_bytes: int
    stdio_bytes: int
    log_bytes: int
    # The most memory the answer may take once parsed (estimated before parsing: host.runtime.results).
    answer_memory_bytes: int = 288 * 1024 * 1024


@dataclass(frozen=True)
class FunctionRequest:
    patient_id: str | None
    purpose: str
    args: dict[str, Any]


@dataclass
class CallResult:
    """The function's parsed answer and what the host saw while it ran."""

    body: Any
    call_ms: float
    log: list[str] = field(default_factory=list)
    stdio_bytes: int = 0
    # The strings the obligations kept from the function: its answer must not hold them.
    withheld: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Warmup:
    """A synthetic invocation run once on a fresh instance before it is offered to a caller.

    CPython inside the component does its lazy start-up work (imports, caches) on the first
    call: warming moves that off the request path. The request and the records are
    synthetic, never patient data, so the instance has still read no patient's records.
    """

    request: FunctionRequest
    scope: Scope
    read: RecordReader
    # None: the warm-up's `records.query` answers `unavailable` (the function's own error path).
    query: RecordQuery | None = None
