"""An access report as a FHIR R4 `Bundle` of `AuditEvent` resources, validated before it leaves."""

from __future__ import annotations

from typing import Any

from host.data.fhir_import import validate_resource
from host.privacy.report import AccessEntry

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
PURPOSE_OF_USE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
FUNCTION_SYSTEM = "urn:wardfn:function"
ROLE_SYSTEM = "urn:wardfn:role"
SUBJECT_SYSTEM = "urn:wardfn:subject"
TRAIL_SYSTEM = "urn:wardfn:audit-seq"
# FHIR's AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious failure (an error).
SUCCESS, REFUSED, FAILED = "0", "4", "8"
# What each kind of entry is, as a FHIR AuditEvent.action: Read or Execute (a search).
ACTIONS = {"access": "R", "search": "E", "report": "R", "reveal": "R"}


def bundle(patient_id: str, entries: list[AccessEntry], generated: str) -> dict[str, Any]:
    """A `collection` Bundle of one AuditEvent an entry, checked against fhir.resources' R4B models."""
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": generated,
        "entry": [{"fullUrl": f"urn:wardfn:audit:{e.seq}", "resource": audit_event(patient_id, e)} for e in entries],
    }
    validate_resource(document)
    return document


def audit_event(patient_id: str, entry: AccessEntry) -> dict[str, Any]:
    """One entry as an AuditEvent: who (role, and subject where shown), what, when, why, how it ended."""
    agent: dict[str, Any] = {"requestor": True}
    if entry.role:
        agent["role"] = [{"coding": [{"system": ROLE_SYSTEM, "code": entry.role}]}]
    if entry.subject_id:
        agent["who"] = {"identifier": {"system": SUBJECT_SYSTEM, "value": entry.subject_id}}
    if entry.org_unit:
        # Where the subject acted from, as their token named it: a ward or department, not a person.
        agent["location"] = {"display": entry.org_unit}
    if entry.purpose:
        agent["purposeOfUse"] = [{"coding": [{"system": PURPOSE_OF_USE, "code": entry.purpose}]}]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"audit-{entry.seq}",
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "action": ACTIONS.get(entry.kind, "R"),
        "recorded": entry.ts,
        "outcome": SUCCESS
        if entry.allowed and entry.outcome == "ok"
        else REFUSED
        if entry.allowed is False
        else FAILED,
        "outcomeDesc": f"{entry.kind}: {entry.outcome}",
        "agent": [agent],
        "source": {"observer": {"display": "wardfn"}},
        "entity": [
            {"what": {"reference": f"Patient/{patient_id}"}},
            {"what": {"identifier": {"system": TRAIL_SYSTEM, "value": str(entry.seq)}}},
        ],
    }
    if entry.function:
        event["subtype"] = [{"system": FUNCTION_SYSTEM, "code": entry.function}]
    if entry.purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": PURPOSE_OF_USE, "code": entry.purpose}]}]
    if entry.break_glass:
        # Break-the-glass, flagged as HL7 security labels do; its reason is never in the report.
        event["meta"] = {"security": [{"system": ACT_CODE, "code": "BTG", "display": "break the glass"}]}
    return event
