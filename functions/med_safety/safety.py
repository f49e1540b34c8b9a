"""Drug-allergy conflicts between active medications and active allergies: plain Python, testable under CPython.

Each type is read narrowed to its active resources (FHIR search parameters the host evaluates);
the filters here still run on what comes back, so the answer is the same either way.

Safe only when both were read: with allergies or medications withheld by the decision, the answer
is `"safe": null` and names what was withheld, never `"safe": true` from a list it was not shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from knowledge import (
    CLASS_INGREDIENTS,
    CLINICAL_DRUG_INGREDIENTS,
    CROSS_REACTIVE,
    RXNORM,
    SNOMED,
    SNOMED_CLASS_ALLERGENS,
)
from wardfn_withheld import Withheld, marker

Resource = dict[str, Any]
Params = Sequence[tuple[str, str]]
# A read narrowed by FHIR search parameters: (resource type, parameters) -> the matching resources.
Query = Callable[[str, Params], list[Resource]]

INGREDIENT_CLASS = {code: cls for cls, members in CLASS_INGREDIENTS.items() for code in members}
INGREDIENT_NAME = {code: name for members in CLASS_INGREDIENTS.values() for code, name in members.items()}


@dataclass(frozen=True)
class Allergen:
    label: str
    system: str
    code: str
    ingredients: frozenset[str]  # RxNorm ingredient codes the allergy names directly
    classes: frozenset[str]  # drug classes the allergy covers


# What the check needs, and how each is asked for: with any of these withheld it cannot say "safe".
NEEDED: dict[str, Params] = {
    "AllergyIntolerance": (("clinical-status", "active"),),
    "MedicationRequest": (("status", "active"),),
}


def check(query: Query) -> dict[str, Any]:
    """Every conflict between an active medication and an active allergy, with its reason; `safe` is
    true or false only when every type it needs was granted, else null with `withheld` naming them."""
    read_types: dict[str, list[Resource]] = {}
    withheld: list[str] = []
    for resource_type, params in NEEDED.items():
        try:
            read_types[resource_type] = query(resource_type, params)
        except Withheld:
            withheld.append(resource_type)
    allergies = [a for a in read_types.get("AllergyIntolerance", []) if _status(a.get("clinicalStatus")) == "active"]
    medications = [m for m in read_types.get("MedicationRequest", []) if m.get("status") == "active"]
    checked = {
        "active_medications": marker() if "MedicationRequest" in withheld else len(medications),
        "active_allergies": marker() if "AllergyIntolerance" in withheld else len(allergies),
    }
    if withheld:
        # No conflict can be found, nor ruled out, without both lists.
        return {"checked": checked, "flags": marker(), "safe": None, "withheld": withheld}
    allergens = [allergen for a in allergies for allergen in _allergens(a)]
    flags = [flag for m in medications for flag in _conflicts(m, allergens)]
    return {"checked": checked, "flags": flags, "safe": not flags, "withheld": []}


def _allergens(allergy: Resource) -> list[Allergen]:
    found = []
    label = _text(allergy.get("code")) or "an allergen"
    for coding in (allergy.get("code") or {}).get("coding", []):
        system, code = coding.get("system"), str(coding.get("code"))
        if system == RXNORM and code in INGREDIENT_CLASS:
            found.append(Allergen(label, system, code, frozenset({code}), frozenset({INGREDIENT_CLASS[code]})))
        elif system == SNOMED and code in SNOMED_CLASS_ALLERGENS:
            found.append(Allergen(label, system, code, frozenset(), frozenset({SNOMED_CLASS_ALLERGENS[code]})))
    return found


def ingredients_of(medication: Resource) -> set[str]:
    """RxNorm ingredient codes of a MedicationRequest, from its codes or its name."""
    concept = medication.get("medicationCodeableConcept") or {}
    found: set[str] = set()
    for coding in concept.get("coding", []):
        if coding.get("system") != RXNORM:
            continue
        code = str(coding.get("code"))
        if code in INGREDIENT_CLASS:
            found.add(code)
        found.update(CLINICAL_DRUG_INGREDIENTS.get(code, ()))
    name = " ".join([concept.get("text") or "", *(c.get("display") or "" for c in concept.get("coding", []))]).lower()
    for code, ingredient in INGREDIENT_NAME.items():
        if " / " not in ingredient and ingredient in name:
            found.add(code)
    return found


def _conflicts(medication: Resource, allergens: list[Allergen]) -> list[dict[str, Any]]:
    ingredients = ingredients_of(medication)
    drug = _text(medication.get("medicationCodeableConcept")) or "a medication"
    flags = []
    for allergen in allergens:
        for ingredient in sorted(ingredients):
            cls = INGREDIENT_CLASS[ingredient]
            if ingredient in allergen.ingredients:
                severity, reason = (
                    "high",
                    f"{drug} contains {INGREDIENT_NAME[ingredient]}, which the patient is allergic to",
                )
            elif cls in allergen.classes:
                severity, reason = (
                    "high",
                    (
                        f"{drug} contains {INGREDIENT_NAME[ingredient]}, one of the {cls}; "
                        f"the patient is allergic to {allergen.label}, also one of the {cls}"
                    ),
                )
            elif any(CROSS_REACTIVE.get(c, ("", ""))[0] == cls for c in allergen.classes):
                note = next(CROSS_REACTIVE[c][1] for c in allergen.classes if CROSS_REACTIVE.get(c, ("", ""))[0] == cls)
                severity, reason = (
                    "moderate",
                    f"{drug} contains {INGREDIENT_NAME[ingredient]}: {note} ({allergen.label})",
                )
            else:
                continue
            flags.append(
                {
                    "medication_request": medication.get("id"),
                    "medication": drug,
                    "medication_code": {"system": RXNORM, "code": ingredient},
                    "allergen": allergen.label,
                    "allergen_code": {"system": allergen.system, "code": allergen.code},
                    "severity": severity,
                    "reason": reason,
                }
            )
    return flags


def _status(concept: Resource | None) -> str | None:
    for coding in (concept or {}).get("coding", []):
        if coding.get("code"):
            return str(coding["code"])
    return None


def _text(concept: Resource | None) -> str | None:
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    return next((str(c["display"]) for c in concept.get("coding", []) if c.get("display")), None)
