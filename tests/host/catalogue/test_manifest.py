"""Function manifests and discovery: a function is refused unless its manifest says what it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from host.catalogue.manifest import SHARED_DIR, FunctionSource, discover_functions, load_manifest
from host.config import PROJECT_ROOT
from host.errors import ConfigurationError

VALID = """\
name = "{name}"
version = "1.0.0"
description = "A test function."
action = "access_patient_data"
patient = "required"
reads = ["Patient", "Observation"]

[limits]
deadline_ms = 100
"""


def write_function(parent: Path, name: str, manifest: str | None = None, app: bool = True) -> Path:
    """A function directory; `manifest` None writes the valid one, "" writes none."""
    directory = parent / name
    directory.mkdir(parents=True)
    if manifest is None:
        manifest = VALID.format(name=name)
    if manifest:
        (directory / "function.toml").write_text(manifest)
    if app:
        (directory / "app.py").write_text("")
    return directory


def valid_with(old: str, new: str, name: str = "fn") -> str:
    text = VALID.format(name=name)
    assert old in text
    return text.replace(old, new)


def test_the_patient_lookup_manifest_loads() -> None:
    manifest = load_manifest(PROJECT_ROOT / "functions" / "patient_lookup")

    assert manifest.name == "patient_lookup"
    assert manifest.action == "read-summary"
    assert manifest.patient == "required"
    assert manifest.reads == ("Patient", "AllergyIntolerance", "MedicationRequest", "Observation")
    assert manifest.limits.deadline_ms == 200
    assert manifest.limits.output_kib == 512


def test_a_minimal_manifest_takes_the_defaults(tmp_path: Path) -> None:
    minimal = 'name = "fn"\nversion = "0.1.0"\ndescription = "d"\naction = "act"\n'
    manifest = load_manifest(write_function(tmp_path, "fn", minimal))

    assert manifest.patient == "required"
    assert manifest.reads == ()
    assert (manifest.limits.deadline_ms, manifest.limits.memory_mib, manifest.limits.output_kib) == (200, 128, 1024)


NO_APP = "no app.py"
# id: (directory, function.toml text or "" for none, what the error must name)
INVALID = {
    "missing-file": ("fn", "", "no function.toml"),
    "bad-toml": ("fn", 'name = "fn"\nversion = \n', "not valid TOML"),
    "unknown-key": ("fn", valid_with('action = "', 'colour = "red"\naction = "'), "colour: Extra inputs"),
    "unknown-limit": ("fn", valid_with("[limits]\n", "[limits]\ncpu = 2\n"), "limits.cpu: Extra inputs"),
    "bad-name": ("Fn", VALID.format(name="Fn"), "name: String should match pattern"),
    "name-not-directory": (
        "fn",
        valid_with('name = "fn"', 'name = "other"'),
        "name 'other' must match its directory 'fn'",
    ),
    "bad-version": ("fn", valid_with('"1.0.0"', '"1.0"'), "version: String should match pattern"),
    "no-description": ("fn", valid_with('description = "A test function."\n', ""), "description: Field required"),
    "bad-action": ("fn", valid_with('"access_patient_data"', '"Access Data"'), "action: String should match pattern"),
    "bad-patient": (
        "fn",
        valid_with('patient = "required"', 'patient = "optional"'),
        "patient: Input should be 'required' or 'none'",
    ),
    "reads-lowercase": ("fn", valid_with('"Patient", ', '"patient", '), "'patient' is not a FHIR resource type name"),
    "reads-path": ("fn", valid_with('"Patient", ', '"../x", '), "'../x' is not a FHIR resource type name"),
    "reads-reference": ("fn", valid_with('"Patient", ', '"Patient/1", '), "'Patient/1' is not a FHIR resource type"),
    "deadline-zero": (
        "fn",
        valid_with("deadline_ms = 100", "deadline_ms = 0"),
        "limits.deadline_ms: Input should be greater than 0",
    ),
    "deadline-huge": (
        "fn",
        valid_with("deadline_ms = 100", "deadline_ms = 600000"),
        "limits.deadline_ms: Input should be less than or equal to 60000",
    ),
    "no-app": ("fn", VALID.format(name="fn"), NO_APP),
}


@pytest.mark.parametrize(("directory", "manifest", "problem"), INVALID.values(), ids=INVALID.keys())
def test_an_invalid_manifest_is_refused_naming_the_problem(
    tmp_path: Path, directory: str, manifest: str, problem: str
) -> None:
    function_dir = write_function(tmp_path, directory, manifest, app=problem != NO_APP)

    with pytest.raises(ConfigurationError) as refused:
        load_manifest(function_dir)

    assert problem in str(refused.value)


def test_discovery_finds_every_function_and_skips_what_is_not_one(tmp_path: Path) -> None:
    root = tmp_path / "functions"
    write_function(root, "beta")
    write_function(root, "alpha")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a function")
    (root / "README.md").write_text("a file, not a directory")
    # Hidden and private directories are never loaded, so an invalid manifest there is harmless.
    write_function(root, ".hidden", "not toml at all =")
    write_function(root, "_private", "not toml at all =")

    found = discover_functions([root])

    assert [source.name for source in found] == ["alpha", "beta"]
    assert found[0] == FunctionSource(path=root / "alpha", manifest=load_manifest(root / "alpha"))


def test_the_shared_guest_modules_are_no_function_but_every_function_beside_them_has_them() -> None:
    found = discover_functions([PROJECT_ROOT / "functions", PROJECT_ROOT / "tests" / "functions"])

    assert SHARED_DIR not in {source.name for source in found}
    shared = {source.name: source.shared_path for source in found}
    assert shared["patient_lookup"] == PROJECT_ROOT / "functions" / SHARED_DIR
    assert (PROJECT_ROOT / "functions" / SHARED_DIR / "wardfn_guest.py").is_file()
    # The test-only functions keep their own code: no shared modules beside them.
    assert shared["hostile"] is None


def test_a_shared_directory_that_looks_like_a_function_is_still_skipped(tmp_path: Path) -> None:
    write_function(tmp_path, "alpha")
    write_function(tmp_path, SHARED_DIR, "not toml at all =")

    (found,) = discover_functions([tmp_path])

    assert (found.name, found.shared_path) == ("alpha", tmp_path / SHARED_DIR)


def test_discovery_reads_every_directory(tmp_path: Path) -> None:
    write_function(tmp_path / "one", "alpha")
    write_function(tmp_path / "two", "beta")

    found = discover_functions([tmp_path / "one", tmp_path / "two"])

    assert {source.name: source.path for source in found} == {
        "alpha": tmp_path / "one" / "alpha",
        "beta": tmp_path / "two" / "beta",
    }


@pytest.mark.parametrize(
    ("manifest", "app"), [("", True), (None, False)], ids=["app-without-manifest", "manifest-without-app"]
)
def test_discovery_refuses_a_half_made_function(tmp_path: Path, manifest: str | None, app: bool) -> None:
    write_function(tmp_path, "fn", manifest, app)

    with pytest.raises(ConfigurationError, match="no (function.toml|app.py)"):
        discover_functions([tmp_path])


def test_discovery_refuses_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(
        ConfigurationError, match=rf"{re.escape(str(missing))} does not exist \(WARDFN_FUNCTIONS_DIRS\)"
    ):
        discover_functions([missing])


def test_discovery_refuses_a_name_defined_twice(tmp_path: Path) -> None:
    first = write_function(tmp_path / "one", "fn")
    second = write_function(tmp_path / "two", "fn")

    with pytest.raises(ConfigurationError, match=re.escape(f"'fn' is defined twice: {first}, {second}")):
        discover_functions([tmp_path / "one", tmp_path / "two"])


def test_a_manifest_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    function_dir = write_function(tmp_path, "fn", "")
    (function_dir / "function.toml").write_bytes(b'name = "\xff"\n')

    with pytest.raises(ConfigurationError, match="function.toml"):
        load_manifest(function_dir)


def test_the_clinical_calc_manifest_loads() -> None:
    manifest = load_manifest(PROJECT_ROOT / "functions" / "clinical_calc")

    assert (manifest.action, manifest.patient, manifest.reads) == ("calculate", "none", ())
    assert manifest.reuse_instances is True
    assert manifest.warmup_args["calculator"] == "bmi"


@pytest.mark.parametrize(
    ("patient", "reads"),
    [("required", "[]"), ("none", '["Patient"]'), ("required", '["Observation"]')],
    ids=["with-patient", "reading-records", "both"],
)
def test_reuse_is_refused_for_a_function_that_can_see_patient_data(tmp_path: Path, patient: str, reads: str) -> None:
    text = (
        f'name = "fn"\nversion = "1.0.0"\ndescription = "d"\naction = "calculate"\n'
        f'patient = "{patient}"\nreads = {reads}\nreuse_instances = true\n'
    )
    with pytest.raises(ConfigurationError, match="reuse_instances: allowed only with patient"):
        load_manifest(write_function(tmp_path, "fn", text))
