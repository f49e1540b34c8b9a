"""The invocation path: policy decision, sandboxed call, audit record, in that order.

Every attempt is audited, allowed or not, and the audit record is durable before
anything is returned: if it cannot be written the caller gets no data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from host.audit.trail import AuditLog
from host.catalogue.registry import LoadedFunction, Registry
from host.errors import (
    AuditUnavailable,
    InvalidRequest,
    PatientNotFound,
    PolicyDenied,
    PolicyUnavailable,
    WardfnError,
)
from host.metrics import UNKNOWN_FUNCTION, Metrics
from host.policy.document import build_input, input_hash
from host.policy.engine import PolicyEngine
from host.policy.obligations import check_output
from host.ratelimit import Budget
from host.runtime.calls import FunctionRequest
from host.runtime.pool import InstancePool
from host.runtime.sandbox import Sandbox
from host.store.resources import ResourceStore
from host.types import AuditEvent, AuditRecord, Decision, Obligations, Scope, Subject

OK = "ok"
# What a sealed audit query is bound to: `ResourceStore.open_text(record.query, AUDIT_QUERY_PURPOSE)`.
AUDIT_QUERY_PURPOSE = "audit-query"
# The same for a break-the-glass reason: a clinician's free text, which may well name the patient.
AUDIT_REASON_PURPOSE = "audit-break-glass-reason"
SEARCH_ACTION = "search"
# Reading the audit trail over HTTP: the policy's action, and the function name its own record carries.
AUDIT_READ_ACTION = "read-audit"
AUDIT_READ_FUNCTION = "audit:records"


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
    input_hash: str | None = None
    break_glass_reason: str | None = None
    sealed_reason: str | None = None
    function_version: str | None = None
    query: str | None = None

    def event(self, outcome: str) -> AuditEvent:
        decision = self.decision
        break_glass = bool(decision and decision.break_glass)
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
            policy_revision=decision.revision if decision else None,
            input_hash=decision.input_hash if decision else self.input_hash,
            break_glass=break_glass,
            # Every break-the-glass attempt, allowed or refused, is for a person to review.
            review=break_glass,
            break_glass_reason=self.sealed_reason if break_glass else None,
            function_version=self.function_version,
            query=self.query,
        )


class _BudgetExceeded(Exception):
    """Internal: an allow turned into a deny by a spent budget; carries the deny for the audit record."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("budget exceeded")
        self.decision = decision


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
        *,
        metrics: Metrics | None = None,
        break_glass_budget: Budget | None = None,
        search_budget: Budget | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self._registry = registry
        self._sandbox = sandbox
        self._pool = pool
        self._store = store
        self._policy = policy
        self._audit = audit
        self._budgets = {
            "break-the-glass": break_glass_budget or Budget(5, 3600),
            "search": search_budget or Budget(60, 60),
        }

    def invoke(
        self,
        request_id: str,
        subject: Subject,
        function: str,
        patient_id: str | None,
        purpose: str,
        args: dict[str, Any],
        break_glass_reason: str | None = None,
    ) -> InvocationResult:
        attempt = _Attempt(request_id, time.perf_counter(), subject, function, patient_id, purpose)
        attempt.break_glass_reason = break_glass_reason
        # Only a registered name becomes a metric label: the requested name is caller input.
        label = UNKNOWN_FUNCTION
        outcome = OK
        loaded: LoadedFunction | None = None
        try:
            try:
                loaded = self._registry.get(function)
                label = loaded.name
                attempt.function_version = loaded.manifest.version
                body = self._authorise_and_run(attempt, loaded, args)
            except _BudgetExceeded as exc:
                attempt.decision = exc.decision
                self._append(attempt.event(PolicyDenied.code))
                raise PolicyDenied(list(exc.decision.reasons), exc.decision.id) from None
            except WardfnError as exc:
                self._append(attempt.event(exc.code))  # an audit failure replaces the original error
                raise
            record = self._append(attempt.event(OK))
        except WardfnError as exc:
            outcome = exc.code
            raise
        finally:
            if loaded is not None and not loaded.manifest.reuse_instances:
                # Its instance is spent: replaced now that the call and its audit are done, so
                # that preparing the next one does not slow this one down.
                self._pool.finished(loaded.pool_key)
            self.metrics.invocation_seconds.labels(label, outcome).observe(time.perf_counter() - attempt.started)
        assert attempt.decision is not None
        return InvocationResult(
            request_id=request_id,
            function=loaded.name,
            version=loaded.manifest.version,
            decision_id=attempt.decision.id,
            audit_seq=record.seq,
            body=body,
        )

    def read_audit(
        self, request_id: str, subject: Subject, purpose: str, after_seq: int, limit: int
    ) -> tuple[int, list[AuditRecord]]:
        """Up to `limit` audit records after `after_seq`, for a subject the policy lets read the trail;
        (the seq of this read's own record, the records). The read is on the trail before any record
        is read: reading the trail is itself audited, allowed or refused."""
        attempt = _Attempt(request_id, time.perf_counter(), subject, AUDIT_READ_FUNCTION, None, purpose)
        try:
            policy_input = build_input(subject, AUDIT_READ_ACTION, purpose, None)
            attempt.input_hash = input_hash(policy_input)
            decision = attempt.decision = self._decide(policy_input)
            if not decision.allow:
                raise PolicyDenied(list(decision.reasons), decision.id)
        except WardfnError as exc:
            self._append(attempt.event(exc.code))
            raise
        own = self._append(attempt.event(OK))
        return own.seq, self._audit.records(limit, after_seq)

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
        if attempt.break_glass_reason:
            # Sealed before anything is decided, so that the audit record of any outcome can carry it.
            attempt.sealed_reason = self._store.seal_text(attempt.break_glass_reason, AUDIT_REASON_PURPOSE)
        if manifest.audit_args:
            # A search's query names a patient: it is kept sealed, as identifying fields are.
            query = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            attempt.query = self._store.seal_text(query, AUDIT_QUERY_PURPOSE)
        loaded.arguments.check(args)
        assert attempt.subject is not None and attempt.purpose is not None
        patient = self._patient_facts(patient_id) if patient_id else None
        policy_input = build_input(
            attempt.subject, manifest.action, attempt.purpose, patient, attempt.break_glass_reason
        )
        attempt.input_hash = input_hash(policy_input)
        decision = self._decide(policy_input)
        attempt.decision = decision
        if not decision.allow:
            raise PolicyDenied(list(decision.reasons), decision.id)
        decision = attempt.decision = self._within_budget(attempt.subject, manifest.action, decision)
        if patient_id and not self._store.patient_exists(patient_id):
            raise PatientNotFound("no patient with that id")
        # The decision's resource types, narrowed to what the function declared it reads.
        obligations = decision.obligations
        scope = Scope(
            patient_id=patient_id,
            resource_types=obligations.resource_types & frozenset(manifest.reads),
            mask=obligations.mask,
            drop=obligations.drop,
            directory=manifest.directory,
        )
        request = FunctionRequest(patient_id=patient_id, purpose=attempt.purpose, args=args)
        prepared = self._pool.take(loaded.pool_key, loaded.component, loaded.limits)
        if manifest.reuse_instances:
            # Reads no records, gets no patient id (the manifest refuses reuse otherwise): the
            # instance may serve the next call; the sandbox refuses a scope that could read.
            try:
                result = self._sandbox.call(prepared, request, Scope(patient_id=None), loaded.limits)
            finally:
                self._pool.give_back(loaded.pool_key, prepared)
        else:
            result = self._sandbox.call(prepared, request, scope, loaded.limits)
        # Again on the way out: nothing withheld, masked or dropped may be in the answer.
        check_output(result.body, scope.resource_types, scope.mask, scope.drop, result.withheld)
        return result.body

    def _patient_facts(self, patient_id: str) -> dict[str, Any]:
        """What the policy needs to know about the patient, from the store."""
        return {
            "id": patient_id,
            "care_team": self._store.care_team(patient_id),
            "consent_directives": self._store.consent_directives(patient_id),
        }

    def _within_budget(self, subject: Subject, action: str, decision: Decision) -> Decision:
        """Spend from the subject's break-glass or search budget; past it, the allow becomes a deny."""
        kind = "break-the-glass" if decision.break_glass else "search" if action == SEARCH_ACTION else None
        if kind is None:
            return decision
        budget = self._budgets[kind]
        if budget.spend(subject.id):
            return decision
        reason = (
            f"the subject has used up their {kind} budget ({budget.limit} in {budget.window_s:g} s); "
            "ask a supervisor or wait"
        )
        denied = dataclasses.replace(decision, allow=False, reasons=(reason,), obligations=Obligations())
        raise _BudgetExceeded(denied)

    def _decide(self, policy_input: dict[str, Any]) -> Decision:
        started = time.perf_counter()
        result = "error"
        try:
            try:
                decision = self._policy.decide(policy_input)
            except PolicyUnavailable:
                raise
            except Exception as exc:  # fail closed: an engine that cannot answer never allows
                raise PolicyUnavailable("the policy engine could not decide") from exc
            if not isinstance(decision, Decision) or not isinstance(decision.allow, bool):
                raise PolicyUnavailable("the policy engine gave no usable decision")
            result = "allow" if decision.allow else "deny"
            return decision
        finally:
            self.metrics.policy_seconds.labels(result).observe(time.perf_counter() - started)
            self.metrics.policy_decisions.labels(result).inc()

    def _append(self, event: AuditEvent) -> Any:
        with self.metrics.audit_write():
            try:
                return self._audit.append(event)
            except AuditUnavailable:
                raise
            except Exception as exc:  # any failure to make the record durable means no answer
                raise AuditUnavailable("the audit record could not be written") from exc
