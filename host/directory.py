"""Search keys for finding patients: exact matching after normalisation (case, accents, spacing).

Exact keys, not fuzzy ones, so that the same lookups can later run on blind indexes (keyed
HMACs of these keys) without the store ever holding a name in plaintext.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

NAME_KINDS = ("family", "given", "full")


def normalise(text: str) -> str:
    """Casefolded, accents removed, runs of spaces, hyphens and apostrophes made one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s\-'’.]+", " ", bare.casefold()).strip()


@dataclass(frozen=True)
class DirectoryQuery:
    name: str | None = None
    birth_date: str | None = None
    identifier: str | None = None

    def keys(self) -> list[tuple[tuple[str, ...], str]]:
        """(kinds, key) pairs that must all match; empty when the query names nothing."""
        pairs: list[tuple[tuple[str, ...], str]] = []
        if self.name and normalise(self.name):
            pairs.append((NAME_KINDS, normalise(self.name)))
        if self.birth_date and self.birth_date.strip():
            pairs.append((("birth_date",), self.birth_date.strip()))
        if self.identifier and self.identifier.strip():
            pairs.append((("identifier",), normalise(self.identifier)))
        return pairs


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
