"""The orchestrator on its own: every attempt audited exactly once, the audit durable before any answer,
fail closed, no patient data in errors.

Real parts where they are cheap: a SQLite store and audit trail in tmp_path, the embedded Rego engine
(or an engine of the test's own, through the `PolicyEngine` protocol), the functions' real manifests
and argument schemas. The wasmtime sandbox, its pool and the registry of built components are stood
in for (the service takes them through its constructor): the sandbox is tested against real
components in tests/host/runtime, and the whole path in tests/e2e.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from host.attempts import AuditRead, Invocation
from host.audit.trail import AuditLog, open_audit
from host.catalogue.arguments import ANY_OBJECT, ArgumentsSchema
from host.catalogue.artifacts import Artifact
from host.catalogue.manifest import load_manifest
from host.catalogue.registry import LoadedFunction
from host.config import PROJECT_ROOT, Settings
from host.data.synthetic import seed_store
from host.errors import (
    AuditUnavailable,
    FunctionNotFound,
    FunctionOutputRejected,
    FunctionReturnedError,
    FunctionTimedOut,
    FunctionTrapped,
    InvalidRequest,
    PatientNotFound,
    PolicyDenied,
    PolicyUnavailable,
    SearchBudgetSpent,
    WardfnError,
)
from host.metrics import UNKNOWN_FUNCTION
from host.policy.document import input_hash
from host.policy.engine import PolicyEngine, RegoPolicyEngine
from host.ratelimit import Budget
from host.runtime.calls import CallResult, FunctionRequest, SandboxLimits
from host.runtime.imports import DirectorySearch
from host.service import AUDIT_QUERY_PURPOSE, AUDIT_READ_FUNCTION, AUDIT_REASON_PURPOSE, InvocationService
from host.store.consent import consented
from host.store.resources import ResourceStore, open_store
from host.types import AuditRecord, Decision, DirectoryQuery, Obligations, Scope, Subject
from tests.conftest import settings_for

READS_PATIENT = Obligations(resource_types=frozenset({"Patient", "Observation"}))


# --- stand-ins for the runtime ----------------------------------------------------------------


def _loaded(name: str) -> LoadedFunction:
    """One of the project's functions as the registry would hold it, without its built component."""
    source = PROJECT_ROOT / "functions" / name
    manifest = load_manifest(source)
    schema = (
        ArgumentsSchema.from_file(source / manifest.args_schema)
        if manifest.args_schema
        else ArgumentsSchema(ANY_OBJECT, name)
    )
    artifact = Artifact(name, manifest.version, "key", f"{name}-cwasm", f"{name}-wasm", Path("x.cwasm"), Path("x.wasm"))
    limits = SandboxLimits(
        deadline_ms=200, memory_bytes=1 << 26, output_bytes=1 << 16, stdio_bytes=1 << 10, log_bytes=1 << 10
    )
    return LoadedFunction(manifest, artifact, component=None, limits=limits, arguments=schema)  # type: ignore[arg-type]


class Catalogue:
    """The registry's `get`, over the functions it was given."""

    def __init__(self, *functions: LoadedFunction) -> None:
        self._functions = {f.name: f for f in functions}

    def get(self, name: str) -> LoadedFunction:
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionNotFound(f"no function named {name!r}") from None


Answer = Callable[[FunctionRequest, Scope], CallResult]


def _echo(request: FunctionRequest, scope: Scope) -> CallResult:
    return CallResult(body={"patient": scope.patient_id, "reads": sorted(scope.resource_types)}, call_ms=0.1)


class ScriptedSandbox:
    """The sandbox's `call`: answers with `answer` (or raises what it raises), and keeps what it was handed."""

    def __init__(self) -> None:
        self.answer: Answer = _echo
        self.calls: list[tuple[FunctionRequest, Scope]] = []
        # The directory search the service handed the last call (None: the sandbox's own).
        self.directory: DirectorySearch | None = None

    def call(
        self,
        prepared: object,
        request: FunctionRequest,
        scope: Scope,
        limits: SandboxLimits,
        directory: DirectorySearch | None = None,
    ) -> CallResult:
        self.calls.append((request, scope))
        self.directory = directory
        return self.answer(request, scope)


class CountingPool:
    """The instance pool's take, give back and finished; `finished` notes how many audit records existed then."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self.taken: list[str] = []
        self.given_back: list[str] = []
        self.finished_after: list[tuple[str, int]] = []

    def take(self, key: str, component: object, limits: SandboxLimits) -> object:
        self.taken.append(key)
        return object()

    def give_back(self, key: str, prepared: object) -> None:
        self.given_back.append(key)

    def finished(self, key: str) -> None:
        try:
            on_trail = len(self._audit.records(limit=1000))
        except WardfnError:  # the trail is unreadable in the tests that break it
            on_trail = -1
        self.finished_after.append((key, on_trail))


# --- policy engines of the test's own ---------------------------------------------------------


class FixedPolicy:
    """Answers every question the same way, as a policy would; keeps the questions."""

    revision = "fixed-revision"

    def __init__(self, allow: bool = True, break_glass: bool = False, obligations: Obligations = READS_PATIENT) -> None:
        self.allow = allow
        self.break_glass = break_glass
        self.obligations = obligations
        self.inputs: list[dict[str, Any]] = []

    def decide(self, input: dict[str, Any]) -> Decision:
        self.inputs.append(input)
        return Decision(
            id=uuid.uuid4().hex,
            allow=self.allow,
            reasons=() if self.allow else ("fixed: no",),
            engine="fixed",
            obligations=self.obligations if self.allow else Obligations(),
            break_glass=self.break_glass,
            revision=self.revision,
            input_hash=input_hash(input),
        )

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass


class DownPolicy(FixedPolicy):
    """An engine that cannot answer: raises `failure`, or returns it when it is not an exception."""

    def __init__(self, failure: object) -> None:
        super().__init__()
        self.failure = failure

    def decide(self, input: dict[str, Any]) -> Decision:
        if isinstance(failure := self.failure, BaseException):
            raise failure
        return failure  # type: ignore[return-value]

    def healthy(self) -> bool:
        return False


# --- the world a service runs in --------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    store: ResourceStore
    audit: AuditLog
    sandbox: ScriptedSandbox
    pool: CountingPool
    consenting: str  # a patient whose consent allows treatment
    refusing: str  # one whose consent refuses it
    catalogue: Catalogue = field(
        default_factory=lambda: Catalogue(*map(_loaded, ("patient_lookup", "patient_search", "clinical_calc")))
    )

    def service(self, policy: PolicyEngine, **budgets: Budget) -> InvocationService:
        return InvocationService(
            self.catalogue,  # type: ignore[arg-type]
            self.sandbox,  # type: ignore[arg-type]
            self.pool,  # type: ignore[arg-type]
            self.store,
            policy,
            self.audit,
            **budgets,  # type: ignore[arg-type]
        )

    def records(self) -> list[AuditRecord]:
        return self.audit.records(limit=1000)

    def hide_the_audit_table(self) -> None:
        """What a full disk or a lost database does to the trail: the next append fails."""
        self._rename("audit", "audit_hidden")

    def show_the_audit_table(self) -> None:
        self._rename("audit_hidden", "audit")

    def _rename(self, table: str, to: str) -> None:
        with sqlite3.connect(self.settings.database_path) as db:
            db.execute(f"ALTER TABLE {table} RENAME TO {to}")
        db.close()


@pytest.fixture(scope="module")
def rego() -> Iterator[RegoPolicyEngine]:
    """The project's policy in the embedded engine."""
    engine = RegoPolicyEngine.from_directory(PROJECT_ROOT / "policies", timeout_s=5.0)
    yield engine
    engine.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = settings_for(tmp_path / "wardfn.db")
    store = open_store(settings)
    audit = open_audit(settings)
    try:
        seed_store(store, 6, 7)
        ids = [p["id"] for p in store.list_patients(100)]
        treat = {pid: consented([json.loads(c) for c in store.search(pid, "Consent")], "TREAT") for pid in ids}
        consenting = next(pid for pid, ok in treat.items() if ok)
        refusing = next(pid for pid, ok in treat.items() if not ok)
        yield World(settings, store, audit, ScriptedSandbox(), CountingPool(audit), consenting, refusing)
    finally:
        audit.close()
        store.close()


STAFF = Subject("dr-grey", "authorized_medical_staff")


def lookup(patient_id: str | None, subject: Subject = STAFF, purpose: str = "TREAT", **more: Any) -> Invocation:
    return Invocation(f"req-{uuid.uuid4().hex[:8]}", subject, "patient_lookup", patient_id, purpose, **more)


def outcome_of(service: InvocationService, call: Invocation) -> str:
    try:
        service.invoke(call)
    except WardfnError as exc:
        return exc.code
    return "ok"


def invocations_counted(service: InvocationService, function: str, outcome: str) -> float:
    labels = {"function": function, "outcome": outcome}
    return service.metrics.registry.get_sample_value("wardfn_invocation_duration_seconds_count", labels) or 0.0


# --- allowed ----------------------------------------------------------------------------------


def test_an_allowed_call_answers_with_its_one_audit_record_already_durable(world: World, rego: PolicyEngine) -> None:
    service = world.service(rego)
    call = lookup(world.consenting)
    result = service.invoke(call)
    [record] = world.records()
    [(request, scope)] = world.sandbox.calls
    assert result.audit_seq == record.seq
    assert result.body == {"patient": world.consenting, "reads": sorted(scope.resource_types)}
    assert (result.request_id, result.function, result.version) == (call.request_id, "patient_lookup", "0.1.0")
    event = record.event
    assert (event.request_id, event.subject_id, event.role) == (call.request_id, "dr-grey", "authorized_medical_staff")
    assert (event.function, event.patient_id, event.purpose) == ("patient_lookup", world.consenting, "TREAT")
    assert (event.outcome, event.allowed, event.decision_id) == ("ok", True, result.decision_id)
    assert event.function_version == "0.1.0" and event.policy_revision == rego.revision
    assert event.input_hash is not None and len(event.input_hash) == 64
    assert not event.break_glass and event.query is None and event.break_glass_reason is None
    # The sandbox got the patient the decision was for, and only types the function declared it reads.
    assert (request.patient_id, request.purpose, request.args) == (world.consenting, "TREAT", {})
    assert scope.patient_id == world.consenting and scope.resource_types
    assert scope.resource_types <= frozenset(world.catalogue.get("patient_lookup").manifest.reads)
    # The spent instance is replaced only once its call is on the trail.
    assert world.pool.finished_after == [(world.catalogue.get("patient_lookup").pool_key, 1)]
    assert invocations_counted(service, "patient_lookup", "ok") == 1


# --- the policy's answer, by table ------------------------------------------------------------

# role, purpose, which patient, outcome: each attempt audited once with that outcome, run only if ok.
DECISIONS = [
    ("authorized_medical_staff", "TREAT", "consenting", "ok"),
    ("authorized_medical_staff", "TREAT", "refusing", "policy_denied"),
    ("billing", "TREAT", "consenting", "policy_denied"),
    ("researcher", "HRESCH", "consenting", "policy_denied"),
    ("nurse", "TREAT", "consenting", "policy_denied"),  # not on the patient's care team
    ("compliance_officer", "HCOMPL", "consenting", "policy_denied"),
]


@pytest.mark.parametrize(("role", "purpose", "patient", "outcome"), DECISIONS)
def test_the_policy_decides_and_every_answer_is_audited_once(
    world: World, rego: PolicyEngine, role: str, purpose: str, patient: str, outcome: str
) -> None:
    patient_id = world.consenting if patient == "consenting" else world.refusing
    call = lookup(patient_id, Subject("u-1", role), purpose)
    assert outcome_of(world.service(rego), call) == outcome
    [record] = world.records()
    assert record.event.request_id == call.request_id and record.event.outcome == outcome
    assert record.event.allowed is (outcome == "ok") and record.event.decision_id is not None
    assert len(world.sandbox.calls) == (1 if outcome == "ok" else 0)


def test_a_denial_is_audited_with_its_reasons_and_decision(world: World, rego: PolicyEngine) -> None:
    with pytest.raises(PolicyDenied) as denied:
        world.service(rego).invoke(lookup(world.consenting, Subject("u-2", "billing")))
    [record] = world.records()
    assert record.event.reasons == tuple(denied.value.reasons) and denied.value.reasons
    assert record.event.decision_id == denied.value.decision_id
    assert world.sandbox.calls == [] and world.pool.taken == []


# --- fail closed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [PolicyUnavailable("sidecar unreachable"), RuntimeError("engine crashed"), TimeoutError(), None, "allow"],
    ids=["unavailable", "crashed", "timed-out", "no-answer", "not-a-decision"],
)
def test_a_policy_engine_that_cannot_answer_means_policy_unavailable_audited(world: World, failure: object) -> None:
    service = world.service(DownPolicy(failure))
    with pytest.raises(PolicyUnavailable):
        service.invoke(lookup(world.consenting))
    [record] = world.records()
    event = record.event
    assert event.outcome == "policy_unavailable" and event.allowed is None and event.decision_id is None
    assert event.input_hash is not None  # what was asked is on the trail, to replay once the engine is back
    assert world.sandbox.calls == []
    assert invocations_counted(service, "patient_lookup", "policy_unavailable") == 1


def test_an_audit_record_that_cannot_be_written_means_no_answer(world: World, rego: PolicyEngine) -> None:
    service = world.service(rego)
    service.invoke(lookup(world.consenting))
    world.hide_the_audit_table()
    with pytest.raises(AuditUnavailable) as caught:
        service.invoke(lookup(world.consenting))
    assert world.consenting not in str(caught.value)
    # The function ran; its answer did not leave, and its instance was still replaced.
    assert len(world.sandbox.calls) == 2 and len(world.pool.finished_after) == 2
    assert invocations_counted(service, "patient_lookup", "audit_unavailable") == 1
    world.show_the_audit_table()
    assert [r.event.outcome for r in world.records()] == ["ok"]
    service.invoke(lookup(world.consenting))  # the trail back: answers again
    assert [r.event.outcome for r in world.records()] == ["ok", "ok"]


def test_an_audit_failure_replaces_any_other_outcome(world: World, rego: PolicyEngine) -> None:
    world.hide_the_audit_table()
    with pytest.raises(AuditUnavailable):
        world.service(rego).invoke(lookup(world.consenting, Subject("u-3", "billing")))  # denied, and not audited
    with pytest.raises(AuditUnavailable):
        world.service(rego).invoke(Invocation("r", STAFF, "no_such_function", None, "TREAT"))


# --- the function's own failures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FunctionTrapped("the function trapped"), "function_trapped"),
        (FunctionTimedOut("the deadline passed"), "function_timed_out"),
        (FunctionOutputRejected("not JSON"), "function_output_rejected"),
        (FunctionReturnedError("invalid-input", "bad calculator"), "function_invalid_input"),
        (FunctionReturnedError("not-found", "nothing"), "function_not_found"),
        (RuntimeError("a bug in the host"), "internal_error"),
    ],
)
def test_a_function_that_fails_is_audited_with_its_code(world: World, error: Exception, code: str) -> None:
    def fail(request: FunctionRequest, scope: Scope) -> CallResult:
        raise error

    world.sandbox.answer = fail
    service = world.service(FixedPolicy())
    with pytest.raises(type(error)):
        service.invoke(lookup(world.consenting))
    [record] = world.records()
    assert record.event.outcome == code and record.event.allowed is True
    assert len(world.pool.finished_after) == 1  # the instance that failed is never handed out again
    assert invocations_counted(service, "patient_lookup", code) == 1


def test_an_answer_holding_what_the_obligations_withheld_is_rejected_and_audited(world: World) -> None:
    world.sandbox.answer = lambda request, scope: CallResult({"note": "Secret Name"}, 0.1, withheld={"Secret Name"})
    with pytest.raises(FunctionOutputRejected) as caught:
        world.service(FixedPolicy()).invoke(lookup(world.consenting))
    assert "Secret" not in str(caught.value)
    [record] = world.records()
    assert record.event.outcome == "function_output_rejected"


# --- requests that go no further ----------------------------------------------------------------


def test_a_patient_not_found_is_known_only_after_an_allow_and_never_named(world: World) -> None:
    policy = FixedPolicy()
    with pytest.raises(PatientNotFound) as caught:
        world.service(policy).invoke(lookup("no-such-patient-4711"))
    assert "4711" not in str(caught.value)
    [record] = world.records()
    assert record.event.outcome == "patient_not_found" and record.event.allowed is True
    assert record.event.patient_id == "no-such-patient-4711"  # the trail says who was asked for
    assert len(policy.inputs) == 1 and world.sandbox.calls == []


def test_a_refused_caller_learns_nothing_of_which_patients_exist(world: World) -> None:
    with pytest.raises(PolicyDenied):
        world.service(FixedPolicy(allow=False)).invoke(lookup("no-such-patient-4711"))
    [record] = world.records()
    assert record.event.outcome == "policy_denied"


def test_an_unknown_function_is_audited_under_the_name_asked_for(world: World) -> None:
    service = world.service(FixedPolicy())
    with pytest.raises(FunctionNotFound):
        service.invoke(Invocation("r-1", STAFF, "no_such_function", world.consenting, "TREAT"))
    [record] = world.records()
    assert (record.event.function, record.event.function_version) == ("no_such_function", None)
    assert record.event.outcome == "function_not_found" and record.event.allowed is None
    # The metric's label is never the caller's input.
    assert invocations_counted(service, UNKNOWN_FUNCTION, "function_not_found") == 1


@pytest.mark.parametrize(
    ("function", "patient", "args"),
    [
        ("patient_lookup", None, {}),  # needs a patient
        ("patient_search", "someone", {"name": "Grey"}),  # works on no single patient
        ("patient_lookup", "consenting", {"unexpected": 1}),  # args outside its schema
        ("patient_search", None, {}),  # the schema needs one key
    ],
)
def test_an_invalid_request_is_audited_before_any_decision(
    world: World, function: str, patient: str | None, args: dict[str, Any]
) -> None:
    policy = FixedPolicy()
    patient_id = world.consenting if patient == "consenting" else patient
    with pytest.raises(InvalidRequest):
        world.service(policy).invoke(Invocation("r", STAFF, function, patient_id, "TREAT", args))
    [record] = world.records()
    assert record.event.outcome == "invalid_request" and record.event.function_version == "0.1.0"
    assert policy.inputs == []


# --- sealed text, budgets, reuse ----------------------------------------------------------------


def test_break_the_glass_past_its_budget_is_a_denial_with_the_reason_sealed(world: World) -> None:
    service = world.service(FixedPolicy(break_glass=True), break_glass_budget=Budget(1, 3600))
    reason = f"unconscious in the emergency department, {world.consenting}"
    service.invoke(lookup(world.consenting, purpose="ETREAT", break_glass_reason=reason))
    with pytest.raises(PolicyDenied, match="break-the-glass budget"):
        service.invoke(lookup(world.consenting, purpose="ETREAT", break_glass_reason=reason))
    allowed, refused = (r.event for r in world.records())
    assert (allowed.outcome, allowed.allowed, refused.outcome, refused.allowed) == ("ok", True, "policy_denied", False)
    for event in (allowed, refused):
        assert event.break_glass and event.review  # both for a person to review
        assert event.break_glass_reason is not None and world.consenting not in event.break_glass_reason
        assert world.store.open_text(event.break_glass_reason, AUDIT_REASON_PURPOSE) == reason
    assert len(world.sandbox.calls) == 1


def test_a_search_keeps_its_query_sealed_and_spends_its_budget(world: World) -> None:
    world.sandbox.answer = lambda request, scope: CallResult({"matches": []}, 0.1)
    service = world.service(FixedPolicy(obligations=Obligations()), search_budget=Budget(1, 60))
    search = Invocation("s-1", STAFF, "patient_search", None, "TREAT", {"name": "Grey"})
    assert service.invoke(search).body == {"matches": []}
    with pytest.raises(PolicyDenied, match="search budget"):
        service.invoke(search)
    for record in world.records():
        assert record.event.query is not None and "Grey" not in record.event.query
        assert json.loads(world.store.open_text(record.event.query, AUDIT_QUERY_PURPOSE)) == {"name": "Grey"}


@pytest.mark.parametrize(
    ("function", "granted", "linked"),
    [
        ("patient_search", {"directory", "log"}, {"directory"}),  # asks for the directory alone
        ("patient_search", {"log"}, set()),  # asked, not granted
        ("patient_lookup", {"directory", "pseudonym", "log"}, set()),  # granted, not asked
    ],
)
def test_an_import_is_linked_only_when_the_manifest_asks_and_the_decision_grants(
    world: World, function: str, granted: set[str], linked: set[str]
) -> None:
    world.sandbox.answer = lambda request, scope: CallResult({"matches": []}, 0.1)
    patient = None if function == "patient_search" else world.consenting
    args = {"name": "Grey"} if function == "patient_search" else {}
    obligations = Obligations(resource_types=frozenset({"Patient"}), imports=frozenset(granted))
    world.service(FixedPolicy(obligations=obligations)).invoke(
        Invocation("i-1", STAFF, function, patient, "TREAT", args)
    )
    [(_, scope)] = world.sandbox.calls
    assert scope.imports == frozenset(linked)


def test_every_directory_query_is_sealed_into_the_record_with_the_ids_it_matched(world: World) -> None:
    [patient] = [json.loads(b) for b in world.store.search(world.consenting, "Patient")]
    family = patient["name"][0]["family"]
    found: list[list[str]] = []

    def two_queries(request: FunctionRequest, scope: Scope) -> CallResult:
        assert world.sandbox.directory is not None
        for query in (DirectoryQuery(name=family), DirectoryQuery(name="nobody by this name")):
            found.append([str(m["id"]) for m in world.sandbox.directory(query, 20)])
        return CallResult({"matches": []}, 0.1)

    world.sandbox.answer = two_queries
    service = world.service(FixedPolicy(obligations=Obligations(imports=frozenset({"directory"}))))
    service.invoke(Invocation("q-1", STAFF, "patient_search", None, "TREAT", {"name": family}))
    assert world.consenting in found[0] and found[1] == []
    [record] = world.records()
    assert record.event.query is not None
    assert family not in record.event.query and world.consenting not in record.event.query
    sealed = json.loads(world.store.open_text(record.event.query, AUDIT_QUERY_PURPOSE))
    assert sealed["args"] == {"name": family}  # the manifest keeps the arguments
    assert [(s["query"]["name"], s["matched"]) for s in sealed["searches"]] == [
        (family, found[0]),
        ("nobody by this name", []),
    ]


def test_a_directory_query_past_the_budget_is_refused_to_the_function(world: World) -> None:
    refused: list[str] = []

    def two_queries(request: FunctionRequest, scope: Scope) -> CallResult:
        assert world.sandbox.directory is not None
        for name in ("one", "two"):
            try:
                world.sandbox.directory(DirectoryQuery(name=name), 20)
            except SearchBudgetSpent as exc:
                refused.append(name)
                assert exc.code == "search_budget_spent"
        return CallResult({"matches": []}, 0.1)

    world.sandbox.answer = two_queries
    service = world.service(
        FixedPolicy(obligations=Obligations(imports=frozenset({"directory"}))), search_budget=Budget(1, 60)
    )
    assert service.invoke(Invocation("q-3", STAFF, "patient_search", None, "TREAT", {"name": "one"})).body == {
        "matches": []
    }
    assert refused == ["two"]  # the invocation's one unit covered the first query; the second found none left
    [record] = world.records()
    sealed = json.loads(world.store.open_text(record.event.query, AUDIT_QUERY_PURPOSE))
    assert [s["query"]["name"] for s in sealed["searches"]] == ["one"]


def test_a_reusable_instance_is_given_back_and_never_handed_a_patient(world: World) -> None:
    bmi = {"calculator": "bmi", "weight_kg": 70, "height_cm": 175}
    calc = Invocation("c-1", STAFF, "clinical_calc", None, "TREAT", bmi)
    world.service(FixedPolicy(obligations=READS_PATIENT)).invoke(calc)
    [(_, scope)] = world.sandbox.calls
    assert scope == Scope(patient_id=None)
    assert world.pool.given_back == [world.catalogue.get("clinical_calc").pool_key]
    assert world.pool.finished_after == []


# --- the audit trail's own reads, and attempts without a subject ---------------------------------


def test_reading_the_trail_is_on_the_trail_before_anything_is_read(world: World, rego: PolicyEngine) -> None:
    service = world.service(rego)
    service.invoke(lookup(world.consenting))
    page = service.read_audit(AuditRead("a-1", Subject("co-1", "compliance_officer"), "HCOMPL"))
    assert [r.event.function for r in page.records] == ["patient_lookup", AUDIT_READ_FUNCTION]
    assert page.audit_seq == page.records[-1].seq and page.records[-1].event.outcome == "ok"
    assert service.read_audit(AuditRead("a-2", Subject("co-1", "compliance_officer"), "HCOMPL", 1, 1)).records == (
        page.records[-1],
    )


def test_a_refused_read_of_the_trail_is_audited_and_reads_nothing(world: World, rego: PolicyEngine) -> None:
    with pytest.raises(PolicyDenied):
        world.service(rego).read_audit(AuditRead("a-1", Subject("dr-grey", "physician"), "HCOMPL"))
    [record] = world.records()
    assert (record.event.function, record.event.outcome, record.event.allowed) == (
        AUDIT_READ_FUNCTION,
        "policy_denied",
        False,
    )


def test_a_read_of_the_trail_with_the_engine_down_is_audited(world: World) -> None:
    with pytest.raises(PolicyUnavailable):
        world.service(DownPolicy(RuntimeError())).read_audit(AuditRead("a-1", STAFF, "HCOMPL"))
    [record] = world.records()
    assert record.event.outcome == "policy_unavailable" and record.event.input_hash is not None


def test_an_attempt_without_a_subject_is_audited_without_one(world: World) -> None:
    world.service(FixedPolicy()).record_rejected("r-401", "unauthenticated", "patient_lookup", world.consenting)
    [record] = world.records()
    event = record.event
    assert (event.request_id, event.outcome, event.subject_id, event.role) == ("r-401", "unauthenticated", None, None)
    assert event.decision_id is None and event.allowed is None
