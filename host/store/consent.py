"""Whether a patient's FHIR R4 Consent resources allow a purpose of use. Pure functions, no I/O.

A purpose is an HL7 PurposeOfUse code (v3 ActReason), e.g. "TREAT". The rules:

1. Only Consents with status "active" count.
2. A provision, at any depth (`provision`, `provision.provision[*]`, ...), of type "deny"
   denies the purposes its `purpose` codings name. A deny that names no purpose denies
   every purpose: in FHIR a rule without a purpose restriction covers them all.
3. A provision of type "permit" permits only the purposes it names explicitly.
4. Deny wins over permit, in the same Consent or across Consents. So a blanket deny cannot
   be carved out by a nested permit: when the record is ambiguous we release less.
5. With no deny, the purposes HIPAA allows without an authorisation count as consented:
   treatment (TREAT, ETREAT), payment (HPAYMT), operations (HOPERAT), and the patient's
   own request (PATRQT). Research (HRESCH) and any other purpose need an explicit permit.

Restrictions other than purpose (actor, data, period, class, security label) are not
evaluated: a deny counts as if it were unrestricted, again erring towards releasing less.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ACT_REASON_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "http://hl7.org/fhir/v3/ActReason",  # pre-R4 spelling, still seen in imported data
        "urn:oid:2.16.840.1.113883.5.8",
    }
)

CONSENTED_WITHOUT_AUTHORISATION = frozenset({"TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PATRQT"})


def consented(consents: list[dict[str, Any]], purpose: str) -> bool:
    """True if the patient's Consent resources allow `purpose` (an HL7 PurposeOfUse code)."""
    permitted = purpose in CONSENTED_WITHOUT_AUTHORISATION
    for consent in consents:
        if consent.get("resourceType", "Consent") != "Consent" or consent.get("status") != "active":
            continue
        for provision in _provisions(consent.get("provision")):
            kind = provision.get("type")
            purposes = _purpose_codes(provision)
            if kind == "deny" and (purposes is None or purpose in purposes):
                return False
            if kind == "permit" and purposes is not None and purpose in purposes:
                permitted = True
    return permitted


def directives(consents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The patient's consent directives as the policy reads them: `{"decision", "purposes"}` each.

    The same reading as `consented`: only active Consents, every provision at any depth; a deny
    that names no purpose has `purposes: []`, which the policy reads as every purpose. A permit
    that names no purpose permits nothing in particular and is left out.
    """
    found: list[dict[str, Any]] = []
    for consent in consents:
        if consent.get("resourceType", "Consent") != "Consent" or consent.get("status") != "active":
            continue
        for provision in _provisions(consent.get("provision")):
            kind = provision.get("type")
            purposes = _purpose_codes(provision)
            if kind == "deny":
                found.append({"decision": "deny", "purposes": sorted(purposes or ())})
            elif kind == "permit" and purposes:
                found.append({"decision": "permit", "purposes": sorted(purposes)})
    return found


def _provisions(node: Any) -> Iterator[dict[str, Any]]:
    """Every provision in the tree, depth first. R4 nests a list under a single root."""
    if isinstance(node, list):
        for child in node:
            yield from _provisions(child)
    elif isinstance(node, dict):
        yield node
        yield from _provisions(node.get("provision"))


def _purpose_codes(provision: dict[str, Any]) -> set[str] | None:
    """The ActReason codes a provision names; None when it has no purpose restriction at all."""
    items = provision.get("purpose")
    if not items:
        return None
    codes: set[str] = set()
    for item in items if isinstance(items, list) else [items]:
        if not isinstance(item, dict):
            continue
        # R4 has Coding here; accept a CodeableConcept too rather than silently ignore a deny.
        codings = item.get("coding") if "coding" in item else [item]
        for coding in codings or []:
            if not isinstance(coding, dict):
                continue
            system = coding.get("system")
            code = coding.get("code")
            if isinstance(code, str) and (system is None or system in ACT_REASON_SYSTEMS):
                codes.add(code)
    return codes
