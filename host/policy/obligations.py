"""Field obligations: mask and drop fields of FHIR resources before a function can read them, and
check the function's answer against the same obligations before the host releases it.

A selector names a top-level element of a resource type: `Patient.telecom`, or `*.note` for every
type. `Patient.identifier(SS)` narrows a list of identifiers to those whose HL7 v2-0203 type code
(or, for the US SSN, system) marks them as the national identifier. Dropping removes the element
(or just the matching entries); masking keeps its shape but replaces every string in it with
`MASK` and marks it with FHIR's data-absent-reason `masked`. What was withheld is returned, so
that the answer can be checked for it afterwards.

This is hand-written rather than FHIRPath (fhirpathpy) because FHIRPath selects but cannot
rewrite, and the obligations need only top-level elements and one identifier filter.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from host.errors import FunctionOutputRejected

MASK = "***"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# The national identifier's system, for records that carry no v2-0203 type.
NATIONAL_SYSTEMS = {"SS": frozenset({"http://hl7.org/fhir/sid/us-ssn", "urn:oid:2.16.840.1.113883.4.1"})}
# Withheld strings shorter than this are not looked for in answers: too likely to occur by chance.
MIN_WITHHELD_CHARS = 6

_SELECTOR = re.compile(r"^(\*|[A-Z][A-Za-z]*)\.([a-z][A-Za-z0-9]*)(?:\(([A-Za-z0-9-]+)\))?$")


@dataclass(frozen=True)
class Selector:
    resource_type: str  # "*" for any
    element: str
    code: str | None

    def applies_to(self, resource_type: object) -> bool:
        return self.resource_type in ("*", resource_type)


# Selectors come from the policy's obligations, a handful of strings; each record read applies
# them again, so each is parsed once rather than once per record.
@functools.lru_cache(maxsize=256)
def parse_selector(text: str) -> Selector:
    """`Type.element`, `*.element` or `Type.element(CODE)`; ValueError otherwise."""
    match = _SELECTOR.match(text)
    if match is None:
        raise ValueError(f"not a field selector: {text!r} (expected Type.element, *.element or Type.element(CODE))")
    return Selector(match.group(1), match.group(2), match.group(3))


def apply(resource: dict[str, Any], mask: frozenset[str], drop: frozenset[str], withheld: set[str]) -> dict[str, Any]:
    """A copy of `resource` with the dropped fields removed and the masked ones masked; adds what went to `withheld`."""
    result: dict[str, Any] = json.loads(json.dumps(resource))
    resource_type = result.get("resourceType")
    for selector in map(parse_selector, sorted(drop)):
        if selector.applies_to(resource_type) and selector.element in result:
            _drop(result, selector, withheld)
    for selector in map(parse_selector, sorted(mask)):
        if selector.applies_to(resource_type) and selector.element in result:
            _mask(result, selector, withheld)
    return result


def apply_to_text(body: str, mask: frozenset[str], drop: frozenset[str], withheld: set[str]) -> str:
    """`apply` to one stored JSON resource, as JSON text: `body` unchanged when no selector names its type.

    On the record-reading path of every invocation, where most resources are of types no
    selector names: those are parsed once (orjson, only to read their `resourceType`) and
    passed on as stored, instead of being decoded, copied and encoded again.
    """
    selectors = [parse_selector(text) for text in mask | drop]
    try:
        resource_type = orjson.loads(body).get("resourceType")
    except (orjson.JSONDecodeError, AttributeError):
        resource_type = None  # undecided: the exact path below decides (or fails)
    if resource_type is not None and not any(s.applies_to(resource_type) for s in selectors):
        return body
    return json.dumps(apply(json.loads(body), mask, drop, withheld))


def _matches(entry: object, code: str) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("system") in NATIONAL_SYSTEMS.get(code, frozenset()):
        return True
    concept = entry.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return any(isinstance(c, dict) and c.get("code") == code for c in codings or [])


def _drop(resource: dict[str, Any], selector: Selector, withheld: set[str]) -> None:
    value = resource[selector.element]
    if selector.code is None:
        withheld.update(_strings(resource.pop(selector.element)))
        return
    if isinstance(value, list):
        kept = [e for e in value if not _matches(e, selector.code)]
        withheld.update(s for e in value if _matches(e, selector.code) for s in _strings(e))
        resource[selector.element] = kept


def _mask(resource: dict[str, Any], selector: Selector, withheld: set[str]) -> None:
    value = resource[selector.element]
    if selector.code is None:
        withheld.update(_strings(value))
        resource[selector.element] = _masked(value)
        return
    if isinstance(value, list):
        for entry in value:
            if _matches(entry, selector.code) and "value" in entry:
                withheld.update(_strings(entry["value"]))
                entry["value"] = MASK
                entry["_value"] = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return MASK
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


CONTAINER_TYPES = frozenset({"Bundle"})


def check_output(
    body: Any, resource_types: frozenset[str], mask: frozenset[str], drop: frozenset[str], withheld: set[str]
) -> None:
    """Refuse an answer that carries a withheld value, or a FHIR resource the obligations do not allow as it is."""
    suspicious = {w for w in withheld if len(w) >= MIN_WITHHELD_CHARS and w != MASK}
    for node in _nodes(body):
        if isinstance(node, str) and node in suspicious:
            raise FunctionOutputRejected("the function's answer holds a field the decision withheld")
        if isinstance(node, dict) and "resourceType" in node:
            # A Bundle only wraps: what it carries is checked entry by entry.
            if node["resourceType"] not in resource_types and node["resourceType"] not in CONTAINER_TYPES:
                raise FunctionOutputRejected("the function's answer holds a resource type the decision did not allow")
            if apply(node, mask, drop, set()) != node:
                raise FunctionOutputRejected("the function's answer holds a field the decision masks or drops")


def _nodes(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, list):
        for item in value:
            yield from _nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _nodes(item)
