"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from host.errors import INVALID_INPUT_REASONS

# FHIR's id type: what a patient id may look like, checked before anything runs.
PATIENT_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"


class Purpose(StrEnum):
    """HL7 PurposeOfUse codes."""

    TREAT = "TREAT"
    ETREAT = "ETREAT"
    HPAYMT = "HPAYMT"
    HOPERAT = "HOPERAT"
    HRESCH = "HRESCH"
    PATRQT = "PATRQT"
    HCOMPL = "HCOMPL"


# The reasons a function may give for refusing its input (host.errors.INVALID_INPUT_REASONS).
InvalidInputReason = StrEnum("InvalidInputReason", {code: code for code in INVALID_INPUT_REASONS})  # type: ignore[misc]


class InvokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: str | None = Field(default=None, pattern=PATIENT_ID_PATTERN)
    purpose: Purpose = Purpose.TREAT
    args: dict[str, Any] = Field(default_factory=dict)
    # Break-the-glass: with purpose ETREAT, why the usual rules are being overridden.
    break_glass_reason: str | None = Field(default=None, max_length=1000)


class InvokeResponse(BaseModel):
    request_id: str
    function: str
    version: str
    decision_id: str
    audit_seq: int
    # True when the answer was released by break-the-glass (the `X-Break-Glass` header says it too).
    break_glass: bool
    result: Any


class FunctionInfo(BaseModel):
    name: str
    version: str
    description: str
    action: str
    patient: str
    reads: list[str]
    digest: str
    # The JSON Schema (2020-12) the invocation's `args` must match, checked before anything runs.
    args_schema: dict[str, Any]


class FieldProblem(BaseModel):
    """A field of the request and the rule it broke (a JSON Schema keyword, or pydantic's error type)."""

    field: str
    rule: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    # policy, store, audit: whether each answers.
    checks: dict[str, bool]


class PolicyStatus(BaseModel):
    engine: str
    revision: str
    healthy: bool
    # Hits, misses and the hit rate of the decision cache; null when caching is off.
    decision_cache: dict[str, Any] | None
    # Seconds a token is still accepted past its `exp` (and before its `nbf`/`iat`): clock skew
    # allowed between the token issuer and this host (WARDFN_JWT_LEEWAY_S).
    token_leeway_s: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    # 403: why the policy denied.
    reasons: list[str] | None = None
    # 422: each invalid field and the rule it broke; never the value sent.
    fields: list[FieldProblem] | None = None
    # 422 from the function itself: a code from the fixed list (docs/functions.md), when it gave one.
    reason: InvalidInputReason | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AuditRecordOut(BaseModel):
    """One audit record as stored and hashed, less the fields kept sealed (named in `sealed`)."""

    seq: int
    ts: str
    request_id: str
    subject_id: str | None
    role: str | None
    org_unit: str | None = None  # as the subject's token named it
    function: str | None
    function_version: str | None
    patient_id: str | None
    purpose: str | None
    decision_id: str | None
    allowed: bool | None
    reasons: list[str]
    outcome: str
    latency_ms: float
    policy_revision: str | None
    input_hash: str | None
    break_glass: bool
    review: bool
    # A search's query and a break-the-glass reason may name a patient: they stay sealed here
    # (`wardfn audit review` opens reasons for the review queue).
    sealed: list[str]
    prev_hash: str
    hash: str
    chain: str = ""  # the writer's chain ("" for records from before chains) and the record's place in it
    n: int = 0


class AuditPage(BaseModel):
    audit_seq: int  # the record of this read, written before the page was read
    records: list[AuditRecordOut]
    next_after_seq: int  # pass as after_seq for the next page


class AccessEntryOut(BaseModel):
    """One access to the patient's data (kind: access, search, report or reveal). Never a break-the-glass
    reason, never a search's query or its other results."""

    seq: int
    ts: str
    kind: Literal["access", "search", "report", "reveal"]
    function: str | None
    purpose: str | None
    role: str | None
    org_unit: str | None  # the subject's organisation unit (ward, department), as their token named it
    subject_id: str | None  # compliance officers; patients only where the settings say so
    allowed: bool | None
    outcome: str
    break_glass: bool


class AccessReportOut(BaseModel):
    patient_id: str
    since: str | None  # inclusive; none: from the start of the trail
    until: str | None  # exclusive; none: up to this read
    audit_seq: int  # the record of this read, written before the trail was read; not listed
    generated: str
    kind_of_report: str
    entries: list[AccessEntryOut]


class DispositionRecordOut(BaseModel):
    seq: int  # the disposition's own audit record
    ts: str
    disposition: Literal["justified", "not_justified", "referred"]
    by: str | None
    note: str | None


class ReviewOut(BaseModel):
    """A break-the-glass access or refused attempt waiting for (or past) review. The patient is not
    named: reveal it with `POST /v1/reviews/{seq}/reveal`."""

    seq: int
    ts: str
    state: Literal["open", "referred", "closed"]
    subject_id: str | None
    role: str | None
    function: str | None
    purpose: str | None
    allowed: bool | None
    outcome: str
    reason: str | None = None  # only when the review is opened (GET /v1/reviews/{seq})
    audit_seq: int | None = None  # the record of opening it
    dispositions: list[DispositionRecordOut]  # oldest first; the last is in force


class ReviewPage(BaseModel):
    audit_seq: int
    reviews: list[ReviewOut]


class DispositionIn(BaseModel):
    """Justified or referred, with a note if the officer likes."""

    model_config = ConfigDict(extra="forbid")

    disposition: Literal["justified", "referred"]
    note: str | None = Field(default=None, max_length=4000)
    purpose: Purpose = Purpose.HCOMPL


class NotJustifiedIn(BaseModel):
    """Not justified: the note saying why is required."""

    model_config = ConfigDict(extra="forbid")

    disposition: Literal["not_justified"]
    note: str = Field(min_length=1, max_length=4000)
    purpose: Purpose = Purpose.HCOMPL


class DispositionOut(BaseModel):
    audit_seq: int
    review_of: int
    disposition: str
    ts: str


class RevealOut(BaseModel):
    review_of: int
    patient_id: str | None
