"""Consent decisions from FHIR R4 Consent resources, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from host.store.consent import consented

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
Resource = dict[str, Any]


def code(value: str, system: str | None = ACT_REASON) -> dict[str, str]:
    return {"code": value} if system is None else {"system": system, "code": value}


def rule(kind: str, *purposes: dict[str, Any], nested: list[Resource] | None = None) -> Resource:
    provision: Resource = {"type": kind}
    if purposes:
        provision["purpose"] = list(purposes)
    if nested is not None:
        provision["provision"] = nested
    return provision


def consent(provision: Resource | None, status: str = "active") -> Resource:
    resource: Resource = {"resourceType": "Consent", "id": "c1", "status": status}
    if provision is not None:
        resource["provision"] = provision
    return resource


DENY_TREAT = consent(rule("deny", code("TREAT")))
PERMIT_RESEARCH = consent(rule("permit", code("HRESCH")))
DENY_RESEARCH = rule("deny", code("HRESCH"))
case = pytest.param

CASES = [
    # consents, purpose, consented?
    case([], "TREAT", True, id="no consents: treatment"),
    case([], "ETREAT", True, id="no consents: emergency treatment"),
    case([], "HPAYMT", True, id="no consents: payment"),
    case([], "HOPERAT", True, id="no consents: operations"),
    case([], "PATRQT", True, id="no consents: patient request"),
    case([], "HRESCH", False, id="no consents: research"),
    case([], "HMARKT", False, id="no consents: marketing"),
    case([], "NOT-A-CODE", False, id="no consents: unknown purpose"),
    case([], "treat", False, id="purpose codes are case-sensitive"),
    case([DENY_TREAT], "TREAT", False, id="deny treatment"),
    case([DENY_TREAT], "HPAYMT", True, id="deny treatment leaves payment"),
    case([DENY_TREAT], "ETREAT", True, id="deny treatment leaves emergency treatment"),
    case([consent(rule("deny", code("TREAT")), "inactive")], "TREAT", True, id="inactive deny ignored"),
    case([consent(rule("deny", code("TREAT")), "draft")], "TREAT", True, id="draft deny ignored"),
    case([consent(rule("deny", code("TREAT")), "rejected")], "TREAT", True, id="rejected deny ignored"),
    case([consent(rule("deny", code("TREAT", None)))], "TREAT", False, id="deny without system denies"),
    case(
        [consent(rule("deny", code("TREAT", "urn:local:purposes")))],
        "TREAT",
        True,
        id="deny in another code system is not ours",
    ),
    case([consent(rule("deny"))], "TREAT", False, id="deny naming no purpose denies every purpose"),
    case([consent(rule("deny"))], "HRESCH", False, id="deny naming no purpose denies research"),
    case([consent(rule("deny", code("HPAYMT"), code("TREAT")))], "TREAT", False, id="deny of two purposes"),
    case(
        [consent(rule("permit", nested=[rule("deny", code("TREAT"))]))],
        "TREAT",
        False,
        id="nested deny under a permit",
    ),
    case(
        [consent(rule("permit", code("HRESCH"), nested=[rule("permit", nested=[DENY_RESEARCH])]))],
        "HRESCH",
        False,
        id="deeply nested deny",
    ),
    case(
        [consent(rule("permit", nested=[rule("deny", code("HRESCH"))]))],
        "TREAT",
        True,
        id="nested deny of another purpose leaves treatment",
    ),
    case(
        [consent(rule("deny", {"coding": [code("TREAT")]}))],
        "TREAT",
        False,
        id="deny given as a CodeableConcept still denies",
    ),
    case([PERMIT_RESEARCH], "HRESCH", True, id="research explicitly permitted"),
    case(
        [consent(rule("deny", code("HMARKT"), nested=[rule("permit", code("HRESCH"))]))],
        "HRESCH",
        True,
        id="research permitted in a nested provision",
    ),
    case([consent(rule("permit"))], "HRESCH", False, id="permit naming no purpose is not explicit"),
    case([consent(rule("permit", code("HRESCH")), "draft")], "HRESCH", False, id="draft permit ignored"),
    case(
        [consent(rule("permit", code("HRESCH"), nested=[rule("deny", code("HRESCH"))]))],
        "HRESCH",
        False,
        id="deny wins over permit in one consent",
    ),
    case(
        [PERMIT_RESEARCH, consent(rule("deny", code("HRESCH")))],
        "HRESCH",
        False,
        id="deny wins over permit across consents",
    ),
    case(
        [consent(rule("deny", code("HRESCH"))), PERMIT_RESEARCH],
        "HRESCH",
        False,
        id="deny wins whatever the order",
    ),
    case(
        [consent(rule("deny"), "active"), consent(rule("permit", code("TREAT")))],
        "TREAT",
        False,
        id="a blanket deny is not carved out by a permit",
    ),
    case([consent(rule("permit", code("TREAT")))], "TREAT", True, id="explicit permit of treatment"),
    case([consent(None)], "TREAT", True, id="consent without provision changes nothing"),
    case([{**DENY_TREAT, "resourceType": "Observation"}], "TREAT", True, id="not a Consent: ignored"),
]


@pytest.mark.parametrize(("consents", "purpose", "expected"), CASES)
def test_consent_table(consents: list[Resource], purpose: str, expected: bool) -> None:
    assert consented(consents, purpose) is expected


def test_does_not_modify_its_input() -> None:
    consents = [DENY_TREAT, PERMIT_RESEARCH]
    before = repr(consents)
    consented(consents, "TREAT")
    assert repr(consents) == before
