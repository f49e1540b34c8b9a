"""FHIR resources as the store's rows: type, id, the patient they belong to, and the JSON body."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from host.errors import InvalidRequest


class ResourceRows:
    """Resources as table rows (type, id, patient, JSON body), counted as they are read."""

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        self._resources = resources
        self.count = 0
        self.patients: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[tuple[str, str, str | None, str]]:
        for resource in self._resources:
            resource_type = resource.get("resourceType")
            resource_id = resource.get("id")
            if not isinstance(resource_type, str) or not isinstance(resource_id, str):
                raise InvalidRequest(
                    f"resource number {self.count + 1} has no string resourceType and id: "
                    "give every resource both before adding it"
                )
            self.count += 1
            if resource_type == "Patient":
                self.patients.append(resource)
            body = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
            yield resource_type, resource_id, patient_of(resource), body


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to, or None if it names none."""
    if resource.get("resourceType") == "Patient":
        resource_id = resource.get("id")
        return resource_id if isinstance(resource_id, str) else None
    # Most types use `subject`, AllergyIntolerance and Consent use `patient`.
    for field in ("subject", "patient"):
        target = resource.get(field)
        reference = target.get("reference") if isinstance(target, dict) else None
        if isinstance(reference, str):
            return _patient_id(reference)
    return None


def _patient_id(reference: str) -> str | None:
    """ "Patient/<id>", also absolute ("<base>/Patient/<id>") or a bundle's "urn:uuid:<id>"."""
    if reference.startswith("urn:uuid:"):
        return reference.removeprefix("urn:uuid:") or None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None
