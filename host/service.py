"""The invocation path: policy decision, sandboxed call, audit record, in that order.

Every attempt is audited, allowed or not, and the audit record is durable before
anything is returned: if it cannot be written the caller gets no data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from host.audit import AuditLog
from host.errors import (
    AuditUnavailable,
    InvalidRequest,
    PatientNotFound,
    PolicyDenied,
    PolicyUnavailable,
    WardfnError,
)
from host.policy import PolicyEngine, build_input
from host.registry import LoadedFunction, Registry
from host.runtime import FunctionRequest, InstancePool, Sandbox
from host.store import ResourceStore
from host.types import AuditEvent, Decision, Scope, Subject

OK = "ok"


@dataclass(frozen=True)
class InvocationResult:
    request_id: str
    function: str
    version: str
    decision_id: str
    audit_seq: int
    body: Any


@dataclass
class _Attempt:
    """What is known so far about one attempt, for its audit record."""

    request_id: str
    started: float
    subject: Subject | None = None
    function: str | None = None
    patient_id: str | None = None
    purpose: str | None = None
    decision: Decision | None = None

    def event(self, outcome: str) -> AuditEvent:
        decision = self.decision
        return AuditEvent(
            request_id=self.request_id,
            subject_id=self.subject.id if self.subject else None,
            role=self.subject.role if self.subject else None,
            function=self.function,
            patient_id=self.patient_id,
            purpose=self.purpose,
            decision_id=decision.id if decision else None,
            allowed=decision.allow if decision else None,
            reasons=decision.reasons if decision else (),
            outcome=outcome,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
        )


class InvocationService:
    """Runs one function invocation for an authenticated subject. Synchronous: call it off the event loop."""

    def __init__(
        self,
        registry: Registry,
        sandbox: Sandbox,
        pool: InstancePool,
        store: ResourceStore,
        policy: PolicyEngine,
        audit: AuditLog,
    ) -> None:
        self._registry = registry
        self._sandbox = sandbox
        self._pool = pool
        self._store = store
        self._policy = policy
        self._audit = audit

    def invoke(
        self,
        request_id: str,
        subject: Subject,
        function: str,
        patient_id: str | None,
        purpose: str,
        args: dict[str, Any],
    ) -> InvocationResult:
        attempt = _Attempt(request_id, time.perf_counter(), subject, function, patient_id, purpose)
        try:
            loaded = self._registry.get(function)
            body = self._authorise_and_run(attempt, loaded, args)
        except WardfnError as exc:
            self._append(attempt.event(exc.code))  # an audit failure replaces the original error
            raise
        record = self._append(attempt.event(OK))
        assert attempt.decision is not None
        return InvocationResult(
            request_id=request_id,
            function=loaded.name,
            version=loaded.manifest.version,
            decision_id=attempt.decision.id,
            audit_seq=record.seq,
            body=body,
        )

    def record_rejected(self, request_id: str, outcome: str, function: str | None, patient_id: str | None) -> None:
        """Audit an attempt refused before it had a subject (a missing or bad token). Never sees the token."""
        self._append(_Attempt(request_id, time.perf_counter(), None, function, patient_id).event(outcome))

    def _authorise_and_run(self, attempt: _Attempt, loaded: LoadedFunction, args: dict[str, Any]) -> Any:
        manifest = loaded.manifest
        patient_id = attempt.patient_id
        if manifest.patient == "required" and not patient_id:
            raise InvalidRequest(f"{manifest.name} needs a patient_id")
        if manifest.patient == "none" and patient_id:
            raise InvalidRequest(f"{manifest.name} works on no single patient: send no patient_id")
        assert attempt.subject is not None and attempt.purpose is not None
        consent = self._store.consent_for(patient_id, attempt.purpose) if patient_id else False
        decision = self._decide(build_input(attempt.subject, manifest.action, patient_id, consent, attempt.purpose))
        attempt.decision = decision
        if not decision.allow:
            raise PolicyDenied(list(decision.reasons), decision.id)
        if patient_id and not self._store.patient_exists(patient_id):
            raise PatientNotFound("no patient with that id")
        scope = Scope(patient_id=patient_id, resource_types=frozenset(manifest.reads))
        request = FunctionRequest(patient_id=patient_id, purpose=attempt.purpose, args=args)
        prepared = self._pool.take(loaded.pool_key)
        if not manifest.reuse_instances:
            return self._sandbox.call(prepared, request, scope, loaded.limits).body
        # Reads no records, gets no patient id (the manifest refuses reuse otherwise): the
        # instance may serve the next call; the sandbox refuses a scope that could read.
        try:
            return self._sandbox.call(prepared, request, Scope(patient_id=None), loaded.limits).body
        finally:
            self._pool.give_back(loaded.pool_key, prepared)

    def _decide(self, policy_input: dict[str, Any]) -> Decision:
        try:
            decision = self._policy.decide(policy_input)
        except PolicyUnavailable:
            raise
        except Exception as exc:  # fail closed: an engine that cannot answer never allows
            raise PolicyUnavailable("the policy engine could not decide") from exc
        if not isinstance(decision, Decision) or not isinstance(decision.allow, bool):
            raise PolicyUnavailable("the policy engine gave no usable decision")
        return decision

    def _append(self, event: AuditEvent) -> Any:
        try:
            return self._audit.append(event)
        except AuditUnavailable:
            raise
        except Exception as exc:  # any failure to make the record durable means no answer
            raise AuditUnavailable("the audit record could not be written") from exc
