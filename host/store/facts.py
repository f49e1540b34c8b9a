"""What the access decision needs to know of one patient, read in one round trip.

Their Patient row (that they exist), their CareTeams (who treats them) and their Consents
(what they allow), with their data key: one query in place of three.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from host.store.consent import directives
from host.store.encryption import FieldCipher
from host.store.sealing import open_body
from host.types import PatientFacts

FACTS_SQL = (
    "SELECT r.resource_type, r.id, r.body, k.wrapped FROM resources r "
    "LEFT JOIN data_keys k ON k.owner = r.patient_id AND k.kek_id = ? "
    "WHERE r.patient_id = ? AND r.resource_type IN ('Patient', 'CareTeam', 'Consent') "
    "ORDER BY r.resource_type, r.id"
)


def facts_from_rows(patient_id: str, rows: Sequence[Sequence[Any]], cipher: FieldCipher | None) -> PatientFacts:
    """The facts from FACTS_SQL's rows; `cipher` None (no rows, or the patient erased): they do not exist."""
    if cipher is None:
        return PatientFacts(exists=False)
    exists = False
    teams: list[str] = []
    consents: list[dict[str, Any]] = []
    for resource_type, rid, body, _ in rows:
        if resource_type == "Patient":
            # Its body is not needed: that the row is there says the patient exists.
            exists = exists or rid == patient_id
        elif resource_type == "CareTeam":
            teams.append(open_body(cipher, resource_type, rid, patient_id, body))
        else:
            consents.append(json.loads(open_body(cipher, resource_type, rid, patient_id, body)))
    return PatientFacts(
        exists=exists, care_team=tuple(care_team_of(teams)), consent_directives=tuple(directives(consents))
    )


def care_team_of(bodies: list[str]) -> list[str]:
    """The practitioner ids on the active CareTeams among `bodies`, sorted, without repeats."""
    members: set[str] = set()
    for body in bodies:
        team = json.loads(body)
        if team.get("status") != "active":
            continue
        for participant in team.get("participant") or []:
            member = participant.get("member") if isinstance(participant, dict) else None
            reference = member.get("reference") if isinstance(member, dict) else None
            if isinstance(reference, str) and reference.startswith("Practitioner/"):
                members.add(reference.removeprefix("Practitioner/"))
    return sorted(members)
