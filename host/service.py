"""The invocation path: policy decision, sandboxed call, audit record, in that order.

Every attempt is audited, allowed or not, and the audit record is durable before
anything is returned: if it cannot be written the caller gets no data.

`invoke` takes one `Invocation` and returns one `InvocationResult`. Each step hands the next
what it needs; the one audit record is built at the end from how far the attempt got.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from host.attempts import (
    AuditRead,
    AuditReadResult,
    Invocation,
    InvocationResult,
    Oversight,
    Question,
    Sealed,
    Searches,
    audit_event,
)
from host.audit.trail import AuditLog
from host.catalogue.manifest import Manifest
from host.catalogue.registry import LoadedFunction, Registry
from host.errors import (
    AuditUnavailable,
    InvalidRequest,
    PatientNotFound,
    PolicyDenied,
    PolicyUnavailable,
    SearchBudgetSpent,
    WardfnError,
)
from host.metrics import UNKNOWN_FUNCTION, Metrics
from host.policy.document import build_input
from host.policy.engine import PolicyEngine
from host.policy.obligations import check_output
from host.ratelimit import Budget
from host.runtime.calls import FunctionRequest
from host.runtime.pool import InstancePool
from host.runtime.sandbox import Sandbox
from host.store.resources import ResourceStore
from host.types import (
    AuditEvent,
    AuditRecord,
    Decision,
    DirectoryQuery,
    Obligations,
    PatientFacts,
    Scope,
    Subject,
)

OK = "ok"
# The outcome of an attempt that ended in an error not of the host's own (the code HTTP answers with).
INTERNAL_ERROR = "internal_error"
# What a sealed audit query is bound to: `ResourceStore.open_text(record.query, AUDIT_QUERY_PURPOSE)`.
AUDIT_QUERY_PURPOSE = "audit-query"
# The same for a break-the-glass reason: a clinician's free text, which may well name the patient.
AUDIT_REASON_PURPOSE = "audit-break-glass-reason"
SEARCH_ACTION = "search"
# Reading the audit trail over HTTP: the policy's action, and the function name its own record carries.
AUDIT_READ_ACTION = "read-audit"
AUDIT_READ_FUNCTION = "audit:records"


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

    def invoke(self, call: Invocation) -> InvocationResult:
        """Decide, run and audit one call. Every attempt makes exactly one audit record, whatever its
        outcome, and the answer leaves only once that record is durable."""
        started = time.perf_counter()
        # Each step's result, None until the step has run: the audit record says how far the attempt got.
        loaded: LoadedFunction | None = None
        sealed: Sealed | None = None
        question: Question | None = None
        decision: Decision | None = None
        searches = Searches()
        outcome = INTERNAL_ERROR  # an error that is not one of the host's own is audited too
        try:
            try:
                loaded = self._registry.get(call.function)
                _check_patient_id(loaded.manifest, call.patient_id)
                sealed = self._seal(call, loaded.manifest)
                loaded.arguments.check(call.args)
                # One store round trip for what the decision needs and whether the patient exists.
                facts = self._store.patient_facts(call.patient_id) if call.patient_id else None
                question = self._question(call, loaded.manifest.action, facts)
                decision = self._rule(call.subject, loaded.manifest.action, question)
                if not decision.allow:
                    raise PolicyDenied(list(decision.reasons), decision.id)
                if facts is not None and not facts.exists:
                    # Told only once the policy allowed: a refused caller learns nothing of who exists.
                    raise PatientNotFound("no patient with that id")
                body = self._run(call, loaded, decision.obligations, searches)
                outcome = OK
            except WardfnError as exc:
                outcome = exc.code
                raise
            finally:
                unsealed: WardfnError | None = None
                if searches.made:
                    # Every directory query and the ids it matched, sealed into this attempt's record.
                    try:
                        sealed = self._seal_searches(call, loaded, sealed, searches)
                    except WardfnError as exc:  # recorded without them, and no answer leaves
                        unsealed, outcome = exc, exc.code
                # If the record cannot be made durable, that failure replaces the outcome: no answer.
                record = self._append(
                    audit_event(
                        call.request_id,
                        call.subject,
                        call.function,
                        call.patient_id,
                        call.purpose,
                        outcome=outcome,
                        started=started,
                        function_version=loaded.manifest.version if loaded is not None else None,
                        sealed=sealed,
                        question=question,
                        decision=decision,
                    )
                )
                if unsealed is not None:
                    raise unsealed
        except WardfnError as exc:
            outcome = exc.code
            raise
        finally:
            if loaded is not None and not loaded.manifest.reuse_instances:
                # Its instance is spent: replaced now that the call and its audit are done, so
                # that preparing the next one does not slow this one down.
                self._pool.finished(loaded.pool_key)
            # Only a registered name becomes a metric label: the requested name is caller input.
            label = loaded.name if loaded is not None else UNKNOWN_FUNCTION
            self.metrics.invocation_seconds.labels(label, outcome).observe(time.perf_counter() - started)
        return InvocationResult(
            request_id=call.request_id,
            function=loaded.name,
            version=loaded.manifest.version,
            decision_id=decision.id,
            audit_seq=record.seq,
            body=body,
            break_glass=decision.break_glass,
        )

    def read_audit(self, read: AuditRead) -> AuditReadResult:
        """Audit records for a subject the policy lets read the trail. The read is on the trail before
        any record is read: reading the trail is itself audited, allowed or refused."""
        own = self.oversee(
            Oversight(read.request_id, read.subject, AUDIT_READ_ACTION, AUDIT_READ_FUNCTION, read.purpose)
        )
        return AuditReadResult(own.seq, tuple(self._audit.records(read.limit, read.after_seq)))

    def oversee(self, act: Oversight, check: Callable[[], None] | None = None) -> AuditRecord:
        """Decide an act on the audit trail and audit it, allowed or refused, before anything is read:
        its record is durable when this returns (or raises). `check`, run only once the policy has
        allowed, may still refuse with a host error of its own, and that is the record's outcome."""
        started = time.perf_counter()
        question: Question | None = None
        decision: Decision | None = None
        outcome = INTERNAL_ERROR
        query: str | None = None
        try:
            question = Question.of(build_input(act.subject, act.action, act.purpose, _oversight_patient(act)))
            decision = self._decide(question.input)
            if not decision.allow:
                raise PolicyDenied(list(decision.reasons), decision.id)
            if check is not None:
                check()
            if act.query is not None:
                query = self._store.seal_text(act.query, AUDIT_QUERY_PURPOSE)
            outcome = act.outcome
        except WardfnError as exc:
            outcome = exc.code
            raise
        finally:
            own = self._append(
                audit_event(
                    act.request_id,
                    act.subject,
                    act.function,
                    act.patient_id,
                    act.purpose,
                    outcome=outcome,
                    started=started,
                    sealed=Sealed(query=query),
                    question=question,
                    decision=decision,
                )
            )
        return own

    def record_rejected(self, request_id: str, outcome: str, function: str | None, patient_id: str | None) -> None:
        """Audit an attempt refused before it had a subject (a missing or bad token). Never sees the token."""
        event = audit_event(request_id, None, function, patient_id, None, outcome=outcome, started=time.perf_counter())
        self._append(event)

    def _seal(self, call: Invocation, manifest: Manifest) -> Sealed:
        """Free text that may name a patient, sealed before anything is decided so that the audit record of
        any outcome can carry it: the break-the-glass reason, and a search's query (kept as identifying
        fields are)."""
        reason = call.break_glass_reason
        query = None
        if manifest.audit_args:
            query = json.dumps(call.args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return Sealed(
            break_glass_reason=self._store.seal_text(reason, AUDIT_REASON_PURPOSE) if reason else None,
            query=self._store.seal_text(query, AUDIT_QUERY_PURPOSE) if query is not None else None,
        )

    def _question(self, call: Invocation, action: str, facts: PatientFacts | None) -> Question:
        """The policy input for this call, with what the store knows about its patient."""
        patient = None
        if call.patient_id and facts is not None:
            patient = {
                "id": call.patient_id,
                "care_team": list(facts.care_team),
                "consent_directives": list(facts.consent_directives),
            }
        return Question.of(build_input(call.subject, action, call.purpose, patient, call.break_glass_reason))

    def _rule(self, subject: Subject, action: str, question: Question) -> Decision:
        """The policy's decision; an allow past the subject's budget comes back as a deny."""
        decision = self._decide(question.input)
        return self._within_budget(subject, action, decision) if decision.allow else decision

    def _run(self, call: Invocation, loaded: LoadedFunction, obligations: Obligations, searches: Searches) -> Any:
        """The function's answer, from a sandbox that reads only what the decision allowed."""
        manifest = loaded.manifest
        # The decision's resource types, narrowed to what the function declared it reads.
        scope = Scope(
            patient_id=call.patient_id,
            resource_types=obligations.resource_types & frozenset(manifest.reads),
            mask=obligations.mask,
            drop=obligations.drop,
            generalise=obligations.generalise,
            # The manifest asks, the decision grants: only an import both name is linked.
            imports=obligations.imports & manifest.asks,
        )
        directory = functools.partial(self._directory_search, call.subject, searches)
        request = FunctionRequest(patient_id=call.patient_id, purpose=call.purpose, args=call.args)
        prepared = self._pool.take(loaded.pool_key, loaded.component, loaded.limits)
        if manifest.reuse_instances:
            # Reads no records, gets no patient id (the manifest refuses reuse otherwise): the
            # instance may serve the next call; the sandbox refuses a scope that could read.
            try:
                result = self._sandbox.call(prepared, request, Scope(patient_id=None), loaded.limits)
            finally:
                self._pool.give_back(loaded.pool_key, prepared)
        else:
            result = self._sandbox.call(prepared, request, scope, loaded.limits, directory)
        # Again on the way out: nothing withheld, masked, dropped or generalised away may be in the answer.
        check_output(result.body, scope.resource_types, scope.mask, scope.drop, result.withheld, scope.generalise)
        return result.body

    def _directory_search(
        self, subject: Subject, searches: Searches, query: DirectoryQuery, limit: int
    ) -> list[dict[str, str | None]]:
        """One directory query of a function the decision granted the directory: each query after the
        first (which the invocation's own charge covers) spends from the subject's search budget, and
        every query is kept, with the ids it matched, for the invocation's audit record."""
        if searches.made and not self._budgets["search"].spend(subject.id):
            raise SearchBudgetSpent("the subject's search budget is used up")
        found = self._store.directory_search(query, limit)
        searches.add(query, [str(match.get("id")) for match in found])
        return found

    def _seal_searches(
        self, call: Invocation, loaded: LoadedFunction | None, sealed: Sealed | None, searches: Searches
    ) -> Sealed:
        """The audit record's sealed query: the call's arguments (if the manifest keeps them) and its searches."""
        args = call.args if loaded is not None and loaded.manifest.audit_args else None
        text = json.dumps(
            {"args": args, "searches": searches.as_json()}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        reason = sealed.break_glass_reason if sealed is not None else None
        return Sealed(break_glass_reason=reason, query=self._store.seal_text(text, AUDIT_QUERY_PURPOSE))

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
        return dataclasses.replace(decision, allow=False, reasons=(reason,), obligations=Obligations())

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

    def _append(self, event: AuditEvent) -> AuditRecord:
        with self.metrics.audit_write():
            try:
                return self._audit.append(event)
            except AuditUnavailable:
                raise
            except Exception as exc:  # any failure to make the record durable means no answer
                raise AuditUnavailable("the audit record could not be written") from exc


def _oversight_patient(act: Oversight) -> dict[str, Any] | None:
    """The patient an oversight act is about, as the policy sees it: its id alone (no record is read)."""
    return {"id": act.patient_id, "care_team": [], "consent_directives": []} if act.patient_id else None


def _check_patient_id(manifest: Manifest, patient_id: str | None) -> None:
    """A patient id exactly when the function works on one patient."""
    if manifest.patient == "required" and not patient_id:
        raise InvalidRequest(f"{manifest.name} needs a patient_id")
    if manifest.patient == "none" and patient_id:
        raise InvalidRequest(f"{manifest.name} works on no single patient: send no patient_id")
