"""A history's medications: MedicationRequests grouped in courses, each with its validity period.

A chronic course (an antihypertensive, a statin, warfarin...) is renewed at even intervals from its
start: every renewal but the last is `completed`, the last is `active` (its validity reaching past
today) or `stopped` (ending the day the course stopped). Acute courses (an antibiotic, an
analgesic) are one request at an encounter, a week or two long, `completed` or `stopped`.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta
from typing import Any

from host.data.draws import at, day_between, new_id
from host.data.synthetic import REFERENCE_DAY
from host.data.vocabulary import MEDICATIONS, RXNORM, UCUM

Resource = dict[str, Any]

ACUTE_MEDICATIONS = {"308182", "310965", "313782", "849574", "745679"}
# Of a chart's requests, the share that renews chronic courses (the rest are acute courses).
CHRONIC_SHARE = 0.75


def medication_requests(
    rng: random.Random, ref: str, first: date, encounters: list[Resource], team: list[str], count: int
) -> list[Resource]:
    """`count` MedicationRequests over the follow-up from `first`, sorted by when they were written."""
    if count <= 0:
        return []
    chronic = [m for m in MEDICATIONS if m[0] not in ACUTE_MEDICATIONS]
    acute = [m for m in MEDICATIONS if m[0] in ACUTE_MEDICATIONS]
    courses = rng.sample(chronic, min(len(chronic), count, 1 + int(math.log2(1 + count / 8))))
    renewals = max(len(courses), min(count, round(count * CHRONIC_SHARE)))
    requests: list[Resource] = []
    spans = []
    for _ in courses:
        start = day_between(rng, first, REFERENCE_DAY - timedelta(days=30))
        ongoing = rng.random() < 0.7
        end = REFERENCE_DAY if ongoing else day_between(rng, start + timedelta(days=30), REFERENCE_DAY)
        spans.append((start, max(end, start + timedelta(days=1)), ongoing))
    for medication, share, (start, end, ongoing) in zip(
        courses, _apportion(renewals, [(e - s).days for s, e, _ in spans]), spans, strict=True
    ):
        requests += _course(rng, ref, team, medication, share, start, end, ongoing)
    for _ in range(count - renewals):
        encounter = rng.choice(encounters)
        authored = datetime.fromisoformat(encounter["period"]["start"]) + timedelta(minutes=rng.randint(5, 60))
        days = rng.randint(5, 14)
        until = authored.date() + timedelta(days=days)
        status = "active" if until > REFERENCE_DAY else rng.choices(("completed", "stopped"), weights=(9, 1))[0]
        request = _request(rng, ref, team, rng.choice(acute), status, authored, authored.date(), until)
        request["encounter"] = {"reference": f"Encounter/{encounter['id']}"}
        requests.append(request)
    requests.sort(key=lambda r: r["authoredOn"])
    return requests


def _course(
    rng: random.Random,
    ref: str,
    team: list[str],
    medication: tuple[str, str, str],
    renewals: int,
    start: date,
    end: date,
    ongoing: bool,
) -> list[Resource]:
    interval = max(1.0, (end - start).days / renewals)
    requests = []
    for number in range(renewals):
        written = start + timedelta(days=round(number * interval))
        until = start + timedelta(days=round((number + 1) * interval))
        last = number == renewals - 1
        if not last:
            status = "completed"
        elif ongoing:
            status = "active"
            until = max(until, REFERENCE_DAY + timedelta(days=rng.randint(30, 180)))
        else:
            status, until = "stopped", end
        authored = at(written, rng.randrange(8 * 60, 18 * 60, 5))
        requests.append(_request(rng, ref, team, medication, status, authored, written, until))
    return requests


def _request(
    rng: random.Random,
    ref: str,
    team: list[str],
    medication: tuple[str, str, str],
    status: str,
    authored: datetime,
    valid_from: date,
    valid_until: date,
) -> Resource:
    code, display, dosage = medication
    return {
        "resourceType": "MedicationRequest",
        "id": new_id(rng),
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}],
            "text": display,
        },
        "subject": {"reference": ref},
        "authoredOn": authored.isoformat(),
        "requester": {"reference": f"Practitioner/{rng.choice(team)}"},
        "dosageInstruction": [{"sequence": 1, "text": dosage}],
        "dispenseRequest": {
            "validityPeriod": {"start": valid_from.isoformat(), "end": valid_until.isoformat()},
            "expectedSupplyDuration": {
                "value": max(1, (valid_until - valid_from).days),
                "unit": "days",
                "system": UCUM,
                "code": "d",
            },
        },
    }


def _apportion(total: int, weights: list[int]) -> list[int]:
    """`total` shared in proportion to `weights` (largest remainders), at least one each when it can."""
    if not weights:
        return []
    floor = 1 if total >= len(weights) else 0
    spare = total - floor * len(weights)
    scale = sum(max(1, w) for w in weights)
    exact = [spare * max(1, w) / scale for w in weights]
    shares = [floor + int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
