"""Field obligations: mask and drop fields of FHIR resources before a function can read them, and
check the function's answer against the same obligations before the host releases it.

A selector names a top-level element of a resource type: `Patient.telecom`, or `*.note` for every
type. `Patient.identifier(SS)` narrows a list of identifiers to those whose HL7 v2-0203 type code
(or, for the US SSN, system) marks them as the national identifier. Dropping leaves FHIR's
data-absent-reason `masked` where the element (or entry) was, so "withheld" never reads as "none";
masking keeps the shape, every string `MASK` (an identifier's value also marked `masked`);
generalising keeps what Safe Harbor allows (`generalise.py`). What was withheld is returned, so
that the answer can be checked for it afterwards.

The guarantee is that a function never *has* a masked or dropped value: it never enters the
sandbox. The output check is defence in depth against a value reaching the function some other
way (a directory search, a guess): it compares withheld values in a normalised form (letters and
digits only, casefolded) wherever they stand in the answer, whole or split across neighbouring
values, but it cannot see through an encoding the function chooses (digits spelled as words,
arithmetic, base64, a short value split across distant parts of the answer). docs/policy.md
says exactly what it compares.

This is hand-written rather than FHIRPath (fhirpathpy) because FHIRPath selects but cannot
rewrite, and the obligations need only top-level elements and one identifier filter.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import re
import string
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from host.errors import FunctionOutputRejected
from host.policy.generalise import absent, generalise, is_absent, parse_generalisation

MASK = "***"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# The national identifier's system, for records that carry no v2-0203 type.
NATIONAL_SYSTEMS = {"SS": frozenset({"http://hl7.org/fhir/sid/us-ssn", "urn:oid:2.16.840.1.113883.4.1"})}
# Keys whose strings are vocabulary, not the patient: a code system, an extension, a datatype's `use`
# code. Shared with every other record, so never withheld (an answer may hold the same elsewhere).
VOCABULARY_KEYS = frozenset({"system", "url", "use"})

# Withheld values are compared in normal form (see `normalise`), where they stand whole: a value, or
# one list's or object's neighbouring values run together (`_scan`). Shorter ones are not looked for
# at all: found by chance in almost any answer, they would refuse every answer.
MIN_WITHHELD_CHARS = 4
# A value with a digit and at least this many characters (an identifier, a phone number, a date,
# a street line) is also looked for inside those runs of text. Shorter numbers (a postal code)
# turn up by chance inside the hex of a resource id or a longer code, so they are not.
MIN_INSIDE_CHARS = 6
# A value with at least this many digits (an SSN, a phone number) is also looked for, forwards and
# backwards, among the digits of any one string, and among all the digits of the answer's numbers
# and numeric strings run together, whatever stands between them.
MIN_SCATTERED_DIGITS = 9
# Containers nested deeper than this refuse the answer. No real answer needs more (the deepest
# Synthea resource is 8, 11 in a Bundle); the checks below walk it without recursion, but `apply`
# (the json module) recurses.
MAX_ANSWER_DEPTH = 64

_SELECTOR = re.compile(r"^(\*|[A-Z][A-Za-z]*)\.([a-z][A-Za-z0-9]*)(?:\(([A-Za-z0-9-]+)\))?$")
# For ASCII text, the common case, `bytes.translate` is several times quicker than a regex.
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
_ASCII_NOT_ALPHANUMERIC = bytes(set(range(128)) - set((string.ascii_letters + string.digits).encode()))
_NOT_DIGIT = re.compile(r"[^0-9]+")
_WITHHELD = "the function's answer holds a field the decision withheld"
_TOO_DEEP = f"the function's answer is nested deeper than {MAX_ANSWER_DEPTH} levels"


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


def apply(
    resource: dict[str, Any], mask: frozenset[str], drop: frozenset[str], withheld: set[str],
    generalised: frozenset[str] = frozenset(), today: datetime.date | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A copy of `resource` with fields dropped, generalised and masked, in that order; adds what went to `withheld`."""
    try:
        result: dict[str, Any] = json.loads(json.dumps(resource))
    except RecursionError as exc:  # the json module recurses: a record this deep cannot be filtered
        raise ValueError("the resource is nested too deeply to filter") from exc
    resource_type = result.get("resourceType")
    for selector in map(parse_selector, sorted(drop)):
        if selector.applies_to(resource_type) and selector.element in result:
            _drop(result, selector, withheld)
    # Specific elements before `*.*`, so that a birth date is a birth year (with its age), not just a year.
    for rule in sorted(map(parse_generalisation, generalised), key=lambda r: (r.element == "*", r.field, r.method)):
        if rule.applies_to(resource_type):
            generalise(result, rule, withheld, today or datetime.date.today())
    for selector in map(parse_selector, sorted(mask)):
        if selector.applies_to(resource_type) and selector.element in result:
            _mask(result, selector, withheld)
    return result


def apply_to_text(
    body: str, mask: frozenset[str], drop: frozenset[str], withheld: set[str], generalised: frozenset[str] = frozenset()
) -> str:
    """`apply` to one stored JSON resource, as JSON text: `body` unchanged when no selector names its type.

    On the record-reading path of every invocation, where most resources are of types no
    selector names: those are parsed once (orjson, only to read their `resourceType`) and
    passed on as stored, instead of being decoded, copied and encoded again. ValueError for a
    body that cannot be filtered (the records import answers `unavailable`).
    """
    selectors = [parse_selector(text) for text in mask | drop] + [parse_generalisation(g) for g in generalised]
    try:
        resource_type = orjson.loads(body).get("resourceType")
    except (orjson.JSONDecodeError, AttributeError):
        resource_type = None  # undecided: the exact path below decides (or fails)
    if resource_type is not None and not any(s.applies_to(resource_type) for s in selectors):
        return body
    try:
        return json.dumps(apply(json.loads(body), mask, drop, withheld, generalised))
    except RecursionError as exc:
        raise ValueError("the stored resource is nested too deeply to filter") from exc


def _matches(entry: object, code: str) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("system") in NATIONAL_SYSTEMS.get(code, frozenset()):
        return True
    concept = entry.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return any(isinstance(c, dict) and c.get("code") == code for c in codings or [])


def _drop(resource: dict[str, Any], selector: Selector, withheld: set[str]) -> None:
    """Remove what the element holds, leaving `absent()` in its place (a primitive's as `_element`): never "none"."""
    value = resource[selector.element]
    if selector.code is None:
        if is_absent(value):
            return
        withheld.update(_strings(resource.pop(selector.element)))
        if isinstance(value, list):
            resource[selector.element] = [absent()]
        elif isinstance(value, dict):
            resource[selector.element] = absent()
        else:
            withheld.update(_strings(resource.pop("_" + selector.element, None)))  # its extensions go too
            resource["_" + selector.element] = absent()
        return
    if isinstance(value, list):
        withheld.update(s for e in value if _matches(e, selector.code) for s in _strings(e))
        resource[selector.element] = [absent() if _matches(e, selector.code) else e for e in value]


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
                entry["_value"] = absent()


def _masked(value: Any) -> Any:
    """`value` with every string in it replaced by MASK: in place, so only ever on `apply`'s private copy."""
    if isinstance(value, str):
        return MASK
    # An explicit stack, not recursion: a stored record nests as deep as its importer allowed.
    stack = [value]
    while stack:
        node = stack.pop()
        slots: Iterable[Any]
        if isinstance(node, list):
            slots = range(len(node))
        elif isinstance(node, dict):
            slots = list(node)
        else:
            continue
        for slot in slots:
            if isinstance(node[slot], str):
                node[slot] = MASK
            else:
                stack.append(node[slot])
    return value


def _strings(value: Any) -> Iterator[str]:
    """The strings in `value` that describe the patient, without the vocabulary around them (`VOCABULARY_KEYS`)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(item for key, item in node.items() if key not in VOCABULARY_KEYS)


# The check on the function's answer. A Bundle wraps; an OperationOutcome is the function's own word.
CONTAINER_TYPES = frozenset({"Bundle", "OperationOutcome"})


def check_output(
    body: Any, resource_types: frozenset[str], mask: frozenset[str], drop: frozenset[str], withheld: set[str],
    generalised: frozenset[str] = frozenset(),
) -> None:  # fmt: skip
    """Refuse an answer nested too deep, holding a withheld value, or a FHIR resource the obligations do not allow."""
    resources = _scan(body, _Sought.of(withheld))
    # Only now, with the whole answer known to be within MAX_ANSWER_DEPTH, are resources compared.
    for resource in resources:
        # A Bundle only wraps: what it carries is checked entry by entry. An OperationOutcome says what was withheld.
        if resource["resourceType"] not in resource_types and resource["resourceType"] not in CONTAINER_TYPES:
            raise FunctionOutputRejected("the function's answer holds a resource type the decision did not allow")
        if apply(resource, mask, drop, set(), generalised) != resource:
            raise FunctionOutputRejected("the function's answer holds a field the decision masks or drops")


def normalise(text: str) -> str:
    """`text` as the output check compares it: letters and digits only, casefolded, any script's digits as 0-9."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_LOWER, _ASCII_NOT_ALPHANUMERIC).decode("ascii")
    # NFKC folds look-alikes (fullwidth, superscript, mathematical digits) into the plain ones.
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in folded if c.isalnum())


@dataclass(frozen=True)
class _Sought:
    """The withheld values an answer is searched for, in normal form."""

    whole: frozenset[str]  # refused as a whole value or run
    inside: tuple[str, ...]  # refused inside a value or run, unless part of a longer number there
    numbers: tuple[str, ...]  # refused among digits, forwards or backwards

    @classmethod
    def of(cls, withheld: Iterable[str]) -> _Sought:
        whole: set[str] = set()
        inside: set[str] = set()
        numbers: set[str] = set()
        for value in withheld:
            form = normalise(value)
            if len(form) < MIN_WITHHELD_CHARS:
                continue
            whole.add(form)
            digits = _NOT_DIGIT.sub("", form)
            if digits and len(form) >= MIN_INSIDE_CHARS:
                inside.add(form)
            if len(digits) >= MIN_SCATTERED_DIGITS:
                numbers.update((digits, digits[::-1]))
        return cls(frozenset(whole), tuple(sorted(inside)), tuple(sorted(numbers)))

    def refuse_text(self, text: str) -> None:
        """Refuse a withheld value that is `text`, or (a value with a digit) inside it."""
        if text in self.whole:
            raise FunctionOutputRejected(_WITHHELD)
        for form in self.inside:
            if form in text and _stands_in(form, text):
                raise FunctionOutputRejected(_WITHHELD)

    def refuse_digits(self, digits: str) -> None:
        """Refuse a long withheld number among `digits`."""
        for number in self.numbers:
            if number in digits:
                raise FunctionOutputRejected(_WITHHELD)


def _stands_in(form: str, text: str) -> bool:
    """Whether `form` is in `text` other than as part of a longer number."""
    return _standing(form).search(text) is not None


@functools.lru_cache(maxsize=256)
def _standing(form: str) -> re.Pattern[str]:
    """`form`, where it does not go on as a longer number.

    A number turns up by chance inside longer ones (a date's digits inside a SNOMED code): where
    `form` starts or ends with a digit, the text must not go on with another digit there. Compiled
    only once `form` is found in a text at all, which an answer that passes seldom makes happen.
    """
    before = "(?<![0-9])" if form[0].isdigit() else ""
    after = "(?![0-9])" if form[-1].isdigit() else ""
    return re.compile(before + re.escape(form) + after)


def _scan(body: Any, sought: _Sought) -> list[dict[str, Any]]:
    """The FHIR resources in `body`, once it has passed; one pass, without recursion.

    Refuses (FunctionOutputRejected, which the service audits) containers nested deeper than
    MAX_ANSWER_DEPTH: orjson accepts about a thousand levels, more than a recursive walk survives.
    Each list's items run together, and so do each object's keys, its values, and its keys and
    values in turn (a nested container neither breaks a run nor joins it): every value and every
    run is looked at for withheld values. The digits of every number and numeric string (one with
    no letter), in document order, are looked at for long withheld numbers.
    """
    if not sought.whole:  # every value sought is in `whole`
        return _resources(body)
    resources: list[dict[str, Any]] = []
    counting = bool(sought.numbers)
    forms: dict[str, str] = {}  # normal forms, by a string's text or a number's repr
    passed: set[str] = set()  # runs already looked at
    digits: list[str] = []
    # (container, its depth), or (the digits that follow a nested container, -1): last in, first out,
    # so a container's contents are looked at before what follows it. The answer is looked at as the
    # one item of a list: a bare string or number is a run too.
    stack: list[tuple[Any, int]] = [([body], 0)]
    while stack:
        node, depth = stack.pop()
        if depth < 0:
            digits.append(node)
            continue
        is_object = isinstance(node, dict)
        if is_object and "resourceType" in node:
            resources.append(node)
        run: list[str] = []  # for an object, keys and values in turn
        later: list[tuple[Any, int]] = []
        segment: list[str] = []
        for leaf in itertools.chain.from_iterable(node.items()) if is_object else node:
            if isinstance(leaf, str):
                text = leaf
            elif isinstance(leaf, (dict, list)):
                if depth >= MAX_ANSWER_DEPTH:
                    raise FunctionOutputRejected(_TOO_DEEP)
                if segment:
                    later.append(("".join(segment), -1))
                    segment = []
                later.append((leaf, depth + 1))
                run.append("")
                continue
            elif isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                text = repr(leaf)
            else:
                run.append("")
                continue
            form = forms.get(text)
            if form is None:  # the first time this answer holds this value: looked at alone
                form = forms[text] = normalise(text)
                sought.refuse_text(form)
                if counting and len(form) >= MIN_SCATTERED_DIGITS and not form.isdigit():
                    sought.refuse_digits(_NOT_DIGIT.sub("", form))
            if counting and form.isdigit():
                segment.append(form)
            run.append(form)
        if segment:
            later.append(("".join(segment), -1))
        stack.extend(reversed(later))
        for text in ("".join(run[0::2]), "".join(run[1::2]), "".join(run)) if is_object else ("".join(run),):
            if text not in passed:
                sought.refuse_text(text)
                passed.add(text)
    if counting:
        sought.refuse_digits("".join(digits))
    return resources


def _resources(body: Any) -> list[dict[str, Any]]:
    """`_scan` for an answer with nothing to look for: the resources in it, under the same depth limit."""
    resources: list[dict[str, Any]] = []
    stack: list[tuple[Any, int]] = [([body], 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if "resourceType" in node:
                resources.append(node)
            children: Iterable[Any] = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= MAX_ANSWER_DEPTH:
                    raise FunctionOutputRejected(_TOO_DEEP)
                stack.append((child, depth + 1))
    return resources
