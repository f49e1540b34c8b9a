"""Search keys for finding patients: exact matching after normalisation (case, accents, spacing).

Exact keys, not fuzzy ones, so that the same lookups can later run on blind indexes (keyed
HMACs of these keys) without the store ever holding a name in plaintext.
"""

from __future__ import annotations

from typing import Any

from host.types import normalise


def patient_keys(patient: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (kind, key) a Patient resource can be found by."""
    keys: set[tuple[str, str]] = set()
    for name in patient.get("name") or []:
        family = normalise(str(name.get("family") or ""))
        givens = [normalise(str(g)) for g in name.get("given") or [] if g]
        if family:
            keys.add(("family", family))
        for given in givens:
            keys.add(("given", given))
        if givens and family:
            keys.add(("full", f"{givens[0]} {family}"))
            keys.add(("full", f"{' '.join(givens)} {family}"))
    if isinstance(patient.get("birthDate"), str):
        keys.add(("birth_date", patient["birthDate"]))
    for identifier in patient.get("identifier") or []:
        if isinstance(identifier.get("value"), str) and identifier["value"].strip():
            keys.add(("identifier", normalise(identifier["value"])))
    return keys


def minimal_match(patient: dict[str, Any]) -> dict[str, str | None]:
    """The only fields a directory search answers: id, display name, birth date, gender."""
    names = patient.get("name") or [{}]
    official = next((n for n in names if n.get("use") == "official"), names[0])
    display = " ".join([*map(str, official.get("given") or []), str(official.get("family") or "")]).strip()
    return {
        "id": str(patient.get("id")),
        "name": display,
        "birth_date": patient.get("birthDate"),
        "gender": patient.get("gender"),
    }


def display_name(patient: dict[str, Any]) -> str:
    """How a patient list shows a patient: the official name's text, else given and family names."""
    names = patient.get("name") or [{}]
    official = next((n for n in names if n.get("use") == "official"), names[0])
    if official.get("text"):
        return str(official["text"])
    return " ".join([*official.get("given", []), official.get("family", "")]).strip()
