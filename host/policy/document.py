"""The host's policy question and how its answer is read, the same for every engine.

The host asks one question of package `healthcare.his`: the values of five rules, `allow`,
`deny`, `reasons`, `obligations` and `break_glass` (`DECISION_QUERY`), about the input document
`build_input` makes. Deny wins; an undefined rule counts as not true; an answer the host cannot
read is `PolicyUnavailable`, never an allow.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from host.errors import PolicyUnavailable
from host.policy.generalise import parse_generalisation
from host.policy.obligations import parse_selector
from host.policy.sources import PACKAGE
from host.types import DEIDENTIFYING_GENERALISATIONS, IDENTIFYING_FIELDS, IMPORTS, Decision, Obligations, Subject

# The rules the host reads. Each is asked for by name, as a comprehension so that an undefined
# rule is an empty list rather than an undefined query: rego-cpp evaluates only these (and what
# they depend on), about 1 ms, where the whole package document costs several. Both engines
# are asked exactly this question.
RULES = ("allow", "deny", "reasons", "obligations", "break_glass")


DECISION_QUERY = "; ".join(f"{rule} := [x | x := data.{PACKAGE}.{rule}]" for rule in RULES)


DEFAULT_REASON = "denied by policy"
# What an allow's obligations may hold; anything else is an engine error (fail closed).
OBLIGATION_KEYS = ("resource_types", "mask", "drop", "imports", "generalise")


def build_input(
    subject: Subject,
    action: str,
    purpose: str,
    patient: dict[str, Any] | None,
    break_glass_reason: str | None = None,
) -> dict[str, Any]:
    """The input document in the host's shape (see policies/his.rego).

    `patient` is None for an action on no single patient, else `{"id", "care_team",
    "consent_directives"}` as the store holds them.
    """
    document: dict[str, Any] = {
        "subject": {"id": subject.id, "roles": list(subject.all_roles)},
        "action": action,
        "purpose": purpose,
        "patient": patient,
        # Always true: the host writes the audit record before any function runs, and
        # refuses the request (AuditUnavailable) when it cannot.
        "audit": {"enabled": True},
    }
    if break_glass_reason is not None:
        document["break_glass"] = {"reason": break_glass_reason}
    return document


def input_hash(input: dict[str, Any]) -> str:
    """sha256 of the input's canonical JSON: what the decision log keeps to replay a decision."""
    return hashlib.sha256(canonical_json(input).encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def document_from_bindings(bindings: Any) -> dict[str, Any]:
    """The answer to DECISION_QUERY as a package document holding only the rules that are defined."""
    if not isinstance(bindings, dict):
        raise PolicyUnavailable("the policy gave an answer the host cannot read")
    document: dict[str, Any] = {}
    for rule in RULES:
        values = bindings.get(rule)
        if not isinstance(values, list) or len(values) > 1:
            raise PolicyUnavailable(f"the policy's answer for {rule} cannot be read")
        if values:
            document[rule] = values[0]
    return document


def read_document(document: Any, *, engine: str, revision: str, input: dict[str, Any]) -> Decision:
    """The decision in the package document; undefined rules count as not true (deny)."""
    allow, reasons = _read_allow(document)
    obligations, break_glass = Obligations(), False
    if allow:
        assert isinstance(document, dict)
        obligations = _read_obligations(document.get("obligations"))
        break_glass = _boolean(document, "break_glass")
    return Decision(
        id=uuid.uuid4().hex,
        allow=allow,
        reasons=reasons,
        engine=engine,
        obligations=obligations,
        break_glass=break_glass,
        revision=revision,
        input_hash=input_hash(input),
    )


def _read_allow(document: Any) -> tuple[bool, tuple[str, ...]]:
    """(allow, reasons) from the package document."""
    if document is None:
        return False, (DEFAULT_REASON,)
    if not isinstance(document, dict):
        raise PolicyUnavailable(f"data.{PACKAGE} is not an object")
    allow = _boolean(document, "allow")
    deny = _boolean(document, "deny")
    raw_reasons = document.get("reasons", [])
    if not isinstance(raw_reasons, list) or not all(isinstance(r, str) for r in raw_reasons):
        raise PolicyUnavailable(f"data.{PACKAGE}.reasons is not a set of strings")
    allowed = allow and not deny
    if allowed:
        return True, ()
    reasons = tuple(sorted(set(raw_reasons))) or (DEFAULT_REASON,)
    return False, reasons


def _read_obligations(raw: Any) -> Obligations:
    """Missing obligations bind to nothing readable (fail closed); malformed or unknown ones are an engine error."""
    if raw is None:
        return Obligations()
    if not isinstance(raw, dict):
        raise PolicyUnavailable(f"data.{PACKAGE}.obligations is not an object")
    unknown_keys = set(raw) - set(OBLIGATION_KEYS)
    if unknown_keys:  # an obligation the host would not apply: never ignored
        raise PolicyUnavailable(
            f"data.{PACKAGE}.obligations names obligations the host does not know: {sorted(unknown_keys)}"
        )
    parts: dict[str, frozenset[str]] = {}
    for key in OBLIGATION_KEYS:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyUnavailable(f"data.{PACKAGE}.obligations.{key} is not a set of strings")
        parts[key] = frozenset(value)
    for selector in parts["mask"] | parts["drop"]:
        try:
            parse_selector(selector)
        except ValueError as exc:
            raise PolicyUnavailable(f"data.{PACKAGE}.obligations names a field the host cannot apply: {exc}") from exc
    for generalisation in parts["generalise"]:
        try:
            parse_generalisation(generalisation)
        except ValueError as exc:
            raise PolicyUnavailable(f"data.{PACKAGE}.obligations.generalise cannot be applied: {exc}") from exc
    unknown = parts["imports"] - IMPORTS
    if unknown:
        raise PolicyUnavailable(
            f"data.{PACKAGE}.obligations.imports names imports the host does not have: {sorted(unknown)}"
        )
    removed = parts["drop"] | {
        parse_generalisation(g).field for g in parts["generalise"] & DEIDENTIFYING_GENERALISATIONS
    }
    if "pseudonym" in parts["imports"] and not IDENTIFYING_FIELDS <= removed:
        # Held here as well as in the policy: a pseudonym beside a name is a re-identification table.
        raise PolicyUnavailable(
            f"data.{PACKAGE}.obligations grants pseudonyms without dropping every identifying field"
        )
    return Obligations(
        resource_types=parts["resource_types"],
        mask=parts["mask"],
        drop=parts["drop"],
        imports=parts["imports"],
        generalise=parts["generalise"],
    )


def _boolean(document: dict[str, Any], rule: str) -> bool:
    if rule not in document:
        return False  # undefined: the rule did not match
    value = document[rule]
    if not isinstance(value, bool):
        raise PolicyUnavailable(f"data.{PACKAGE}.{rule} is {type(value).__name__}, not a boolean")
    return value
