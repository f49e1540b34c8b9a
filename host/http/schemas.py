"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
    result: Any


class FunctionInfo(BaseModel):
    name: str
    version: str
    description: str
    action: str
    patient: str
    reads: list[str]
    digest: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    reasons: list[str] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AuditRecordOut(BaseModel):
    """One audit record as stored and hashed, less the fields kept sealed (named in `sealed`)."""

    seq: int
    ts: str
    request_id: str
    subject_id: str | None
    role: str | None
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


class AuditPage(BaseModel):
    audit_seq: int  # the record of this read, written before the page was read
    records: list[AuditRecordOut]
    next_after_seq: int  # pass as after_seq for the next page
