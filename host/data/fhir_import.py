"""Importing FHIR R4 Bundles (transaction or collection, as Synthea writes them) into the store.

Every entry is validated with fhir.resources' R4B models (its default models are R5,
which reject R4 data) before anything is written; `urn:uuid:` references are rewritten
to `Type/id`; a bundle is stored in one transaction or not at all. Error messages name
the file, the entry and the field, never a value: values are patient data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from host.errors import InvalidRequest
from host.store.resources import ResourceStore
from host.store.upsert import Written

BUNDLE_TYPES = {"transaction", "collection", "batch", "searchset"}
URN_UUID = "urn:uuid:"


@dataclass(frozen=True)
class ImportedBundle:
    """One bundle imported: how many resources and patients it held, and what the import changed."""

    path: Path
    written: Written

    @property
    def resources(self) -> int:
        return self.written.resources.total

    @property
    def patients(self) -> int:
        return self.written.patients.total


class BundleRejected(InvalidRequest):
    """A bundle that cannot be imported; the message names the file and the entry."""

    code = "bundle_rejected"


def bundle_files(paths: list[Path]) -> list[Path]:
    """The bundle files named, with every `*.json` of a named directory, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            raise BundleRejected(f"{path}: no such file or directory")
    return files


def read_bundle(path: Path, max_bytes: int) -> list[dict[str, Any]]:
    """The bundle's resources, validated and with references resolved; BundleRejected if anything is wrong."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleRejected(
            f"{path}: {size} bytes is over the import limit of {max_bytes} bytes "
            "(split the bundle, or raise WARDFN_IMPORT_MAX_BYTES)"
        )
    try:
        bundle = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleRejected(f"{path}: not valid JSON ({_json_position(exc)})") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleRejected(f"{path}: not a FHIR Bundle (resourceType must be 'Bundle')")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise BundleRejected(f"{path}: Bundle.type must be one of {', '.join(sorted(BUNDLE_TYPES))}")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BundleRejected(f"{path}: Bundle.entry must be a list")
    resources = [_entry_resource(path, index, entry) for index, entry in enumerate(entries)]
    targets = _reference_targets(path, entries, resources)
    for index, resource in enumerate(resources):
        _resolve(resource, targets, path, index)
    return resources


def _entry_resource(path: Path, index: int, entry: Any) -> dict[str, Any]:
    where = f"{path}: entry {index}"
    resource = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(resource, dict):
        raise BundleRejected(f"{where}: has no resource")
    resource_type = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(resource_type))
    except (ValueError, KeyError):
        raise BundleRejected(f"{where}: unknown FHIR R4 resourceType {str(resource_type)[:40]!r}") from None
    if not isinstance(resource.get("id"), str):
        full_url = entry.get("fullUrl", "")
        if not (isinstance(full_url, str) and full_url.startswith(URN_UUID)):
            raise BundleRejected(f"{where} ({resource_type}): has neither an id nor a urn:uuid fullUrl")
        resource = {**resource, "id": full_url.removeprefix(URN_UUID)}
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "resource"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise BundleRejected(f"{where} ({resource_type}): {field}: {first['msg']}{more}") from None
    return resource


def _reference_targets(path: Path, entries: list[Any], resources: list[dict[str, Any]]) -> dict[str, str]:
    targets: dict[str, str] = {}
    for index, (entry, resource) in enumerate(zip(entries, resources, strict=True)):
        local = f"{resource['resourceType']}/{resource['id']}"
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            if full_url in targets and targets[full_url] != local:
                raise BundleRejected(f"{path}: entry {index}: fullUrl is used twice")
            targets[full_url] = local
        targets[local] = local
    return targets


def _resolve(node: Any, targets: dict[str, str], path: Path, index: int) -> None:
    """Rewrite `urn:uuid:` references in place; a reference to nothing in the bundle is an error."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith(URN_UUID):
                if value not in targets:
                    raise BundleRejected(f"{path}: entry {index}: reference to nothing in the bundle ({value})")
                node[key] = targets[value]
            else:
                _resolve(value, targets, path, index)
    elif isinstance(node, list):
        for item in node:
            _resolve(item, targets, path, index)


def _json_position(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "unreadable"


def import_bundles(store: ResourceStore, files: list[Path], max_bytes: int) -> Iterator[ImportedBundle]:
    """Import each file in turn, each in one transaction, writing only what is new or changed; stops at
    the first rejected bundle."""
    for path in files:
        yield ImportedBundle(path=path, written=store.upsert_resources(read_bundle(path, max_bytes)))


def validate_resource(resource: dict[str, Any]) -> None:
    """Check a resource the host made (an access report's Bundle) against the same R4B models the import
    uses; ValueError naming the first field that does not hold (never its value)."""
    try:
        get_fhir_model_class(str(resource.get("resourceType"))).model_validate(resource)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "resource"
            raise ValueError(f"{resource.get('resourceType')}: {field}: {first['msg']}") from None
        raise ValueError(f"not a FHIR R4 resourceType: {str(resource.get('resourceType'))[:40]!r}") from None
