"""Importing FHIR R4 Bundles: the shared Synthea bundles in, broken bundles refused whole."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.config import PROJECT_ROOT
from host.data.fhir_import import BundleRejected, bundle_files, import_bundles, read_bundle
from host.store.encryption import LocalKek
from host.store.resources import ResourceStore

SYNTHEA = PROJECT_ROOT.parent / "shared" / "data" / "synthea"
LIMIT = 32 * 1024 * 1024


def synthea_dir() -> Path:
    if not any(SYNTHEA.glob("*.json")):
        pytest.fail(f"the shared Synthea bundles are missing: expected them in {SYNTHEA}")
    return SYNTHEA


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ResourceStore]:
    opened = ResourceStore(tmp_path / "wardfn.db", LocalKek(os.urandom(32)))
    yield opened
    opened.close()


def _plaintext(store: ResourceStore, path: Path) -> list[tuple[str, str, str | None, list[str]]]:
    """Every row's (type, id, patient) with, for rows of a patient, the decrypted bodies of that type.

    Bodies are sealed with a fresh nonce each time, so their bytes change on every write: what
    must not change is what they decrypt to.
    """
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT resource_type, id, patient_id FROM resources ORDER BY 1, 2").fetchall()
    db.close()
    return [(t, i, p, store.search(p, t) if p else []) for t, i, p in rows]


def _dump(store: ResourceStore, path: Path) -> str:
    return hashlib.sha256(json.dumps(_plaintext(store, path)).encode()).hexdigest()


def test_every_shared_bundle_imports_with_references_resolved(store: ResourceStore, tmp_path: Path) -> None:
    files = bundle_files([synthea_dir()])
    assert len(files) == 11 and any(" " in f.name for f in files)
    imported = list(import_bundles(store, files, LIMIT))
    assert [b.patients for b in imported] == [1] * 11
    for bundle_path, result in zip(files, imported, strict=True):
        bundle = json.loads(bundle_path.read_bytes())
        assert result.resources == len(bundle["entry"])
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        stored_types = {
            t: len(store.search(patient["id"], t)) for t in ("Observation", "Condition", "AllergyIntolerance")
        }
        for resource_type, count in stored_types.items():
            expected = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)
            assert count == expected, resource_type
    bodies = [body for *_, found in _plaintext(store, tmp_path / "wardfn.db") for body in found]
    assert len(bodies) > 1000
    assert not [body for body in bodies if "urn:uuid:" in body]
    assert store.count_patients() == 11


def _sealed(path: Path) -> list[tuple[str, str, bytes]]:
    """Every row's sealed bytes: a fresh nonce on every write, so any write changes them."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT resource_type, id, body FROM resources ORDER BY 1, 2").fetchall()
    db.close()
    return [(t, i, bytes(b)) for t, i, b in rows]


def test_reimporting_the_same_bundle_changes_nothing_and_says_so(store: ResourceStore, tmp_path: Path) -> None:
    files = bundle_files([synthea_dir()])[:2]
    first = list(import_bundles(store, files, LIMIT))
    assert all(b.written.resources.new == b.resources > 0 and b.written.patients.new == 1 for b in first)
    before, sealed = _dump(store, tmp_path / "wardfn.db"), _sealed(tmp_path / "wardfn.db")
    again = list(import_bundles(store, files, LIMIT))
    assert [(b.written.resources.unchanged, b.written.patients.unchanged) for b in again] == [
        (b.resources, 1) for b in first
    ]
    assert not any(b.written.changed for b in again)
    assert _sealed(tmp_path / "wardfn.db") == sealed  # not one row rewritten
    assert _dump(store, tmp_path / "wardfn.db") == before


def test_reimporting_a_changed_bundle_writes_and_counts_only_the_changes(store: ResourceStore, tmp_path: Path) -> None:
    [path] = bundle_files([synthea_dir()])[:1]
    [first] = import_bundles(store, [path], LIMIT)
    bundle = json.loads(path.read_bytes())
    observation = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    observation["status"] = "amended" if observation.get("status") != "amended" else "final"
    bundle["entry"].append({"resource": {**observation, "id": "added-observation-1"}})
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(bundle))
    sealed = dict(((t, i), b) for t, i, b in _sealed(tmp_path / "wardfn.db"))
    [second] = import_bundles(store, [changed], LIMIT)
    assert (second.written.resources.new, second.written.resources.updated) == (1, 1)
    assert second.written.resources.unchanged == first.resources - 1
    patients = second.written.patients
    assert (patients.new, patients.updated, patients.unchanged) == (0, 1, 0)
    rewritten = [key for t, i, b in _sealed(tmp_path / "wardfn.db") if sealed.get(key := (t, i)) != b]
    assert sorted(rewritten) == sorted([("Observation", observation["id"]), ("Observation", "added-observation-1")])


def _small_bundle() -> dict[str, Any]:
    smallest = min(bundle_files([synthea_dir()]), key=lambda p: p.stat().st_size)
    return json.loads(smallest.read_bytes())


def _break(kind: str, path: Path) -> str:
    """Write a broken bundle of `kind`; return a phrase the error must contain."""
    bundle = _small_bundle()
    entry = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation")
    if kind == "truncated":
        path.write_text(json.dumps(bundle)[:50_000])
        return "not valid JSON"
    if kind == "dangling-reference":
        bundle["entry"][entry]["resource"]["subject"]["reference"] = "urn:uuid:00000000-0000-4000-8000-000000000000"
        path.write_text(json.dumps(bundle))
        return f"entry {entry}: reference to nothing"
    if kind == "wrong-resource-type":
        bundle["entry"][entry]["resource"]["resourceType"] = "Observashun"
        path.write_text(json.dumps(bundle))
        return f"entry {entry}: unknown FHIR R4 resourceType"
    if kind == "invalid-field":
        bundle["entry"][entry]["resource"]["status"] = {"not": "a code"}
        path.write_text(json.dumps(bundle))
        return f"entry {entry} (Observation): status"
    if kind == "not-a-bundle":
        path.write_text(json.dumps(bundle["entry"][0]["resource"]))
        return "not a FHIR Bundle"
    if kind == "fifty-megabytes":
        padding = "x" * (50 * 1024 * 1024)
        bundle["entry"][0]["resource"]["text"] = {"status": "generated", "div": f"<div>{padding}</div>"}
        path.write_text(json.dumps(bundle))
        return "over the import limit"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["truncated", "dangling-reference", "wrong-resource-type", "invalid-field", "not-a-bundle", "fifty-megabytes"],
)
def test_a_broken_bundle_is_refused_whole_and_the_store_is_unchanged(
    store: ResourceStore, tmp_path: Path, kind: str
) -> None:
    list(import_bundles(store, bundle_files([synthea_dir()])[:1], LIMIT))
    before = _dump(store, tmp_path / "wardfn.db")
    broken = tmp_path / f"broken-{kind}.json"
    expected = _break(kind, broken)
    with pytest.raises(BundleRejected) as caught:
        list(import_bundles(store, [broken], LIMIT))
    message = str(caught.value)
    assert str(broken) in message and expected in message
    assert _dump(store, tmp_path / "wardfn.db") == before


def test_errors_name_the_field_never_its_value(tmp_path: Path) -> None:
    bundle = _small_bundle()
    patient = bundle["entry"][0]["resource"]
    patient["birthDate"] = "Not-A-Date-Secret-Value"
    broken = tmp_path / "b.json"
    broken.write_text(json.dumps(bundle))
    with pytest.raises(BundleRejected) as caught:
        read_bundle(broken, LIMIT)
    assert "birthDate" in str(caught.value)
    assert "Secret" not in str(caught.value)
