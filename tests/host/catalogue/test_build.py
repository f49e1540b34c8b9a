"""Building functions: the cache key follows exactly what the compiled code depends on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import build_function, cache_key, componentize
from host.catalogue.manifest import SHARED_DIR, FunctionSource, discover_functions, load_manifest
from host.config import PROJECT_ROOT, load_settings
from host.errors import BuildError
from host.runtime.engine import create_engine
from tests.conftest import FUNCTION_DIRS, TEST_HOME

FUNCTION = "patient_lookup"


def source_at(path: Path) -> FunctionSource:
    return FunctionSource(path=path, manifest=load_manifest(path))


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    """A private copy of functions/patient_lookup and the shared guest modules, without generated files."""
    target = tmp_path / "functions" / FUNCTION
    ignore = shutil.ignore_patterns("__pycache__", "wit_world", "componentize_py_*")
    shutil.copytree(PROJECT_ROOT / "functions" / FUNCTION, target, ignore=ignore)
    shutil.copytree(PROJECT_ROOT / "functions" / SHARED_DIR, target.parent / SHARED_DIR, ignore=ignore)
    return target


@pytest.fixture
def wit_dir(tmp_path: Path) -> Path:
    target = tmp_path / "wit"
    shutil.copytree(PROJECT_ROOT / "wit", target)
    return target


def test_the_key_is_stable_for_unchanged_sources(function_dir: Path, wit_dir: Path) -> None:
    key = cache_key(source_at(function_dir), wit_dir)

    assert key == cache_key(source_at(function_dir), wit_dir)
    assert len(key) == 64


def test_the_key_does_not_depend_on_where_the_function_lives(function_dir: Path, wit_dir: Path) -> None:
    assert cache_key(source_at(function_dir), wit_dir) == cache_key(
        source_at(PROJECT_ROOT / "functions" / FUNCTION), PROJECT_ROOT / "wit"
    )


def test_the_key_changes_when_a_source_file_changes(function_dir: Path, wit_dir: Path) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    summary = function_dir / "summary.py"
    summary.write_text(summary.read_text() + "\n# changed\n")

    assert cache_key(source_at(function_dir), wit_dir) != before


def test_the_key_changes_when_a_source_file_is_added(function_dir: Path, wit_dir: Path) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    (function_dir / "helpers.py").write_text("VALUE = 1\n")

    assert cache_key(source_at(function_dir), wit_dir) != before


def test_the_key_changes_when_the_manifest_changes(function_dir: Path, wit_dir: Path) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    manifest = function_dir / "function.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.1.1"'))

    changed = source_at(function_dir)
    assert changed.manifest.version == "0.1.1"
    assert cache_key(changed, wit_dir) != before


def test_the_key_changes_when_the_shared_guest_module_changes(function_dir: Path, wit_dir: Path) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    shared = function_dir.parent / SHARED_DIR / "wardfn_guest.py"
    shared.write_text(shared.read_text() + "\n# changed\n")

    assert cache_key(source_at(function_dir), wit_dir) != before


def test_the_key_changes_when_a_shared_module_is_added(function_dir: Path, wit_dir: Path) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    (function_dir.parent / SHARED_DIR / "more_helpers.py").write_text("VALUE = 1\n")

    assert cache_key(source_at(function_dir), wit_dir) != before


def test_a_function_without_shared_modules_has_a_key_of_its_own(function_dir: Path, wit_dir: Path) -> None:
    with_shared = cache_key(source_at(function_dir), wit_dir)
    shutil.rmtree(function_dir.parent / SHARED_DIR)

    assert source_at(function_dir).shared_path is None
    assert cache_key(source_at(function_dir), wit_dir) != with_shared


def test_the_key_changes_when_a_wit_file_changes(function_dir: Path, wit_dir: Path) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    wit = wit_dir / "patient.wit"
    wit.write_text(wit.read_text() + "\n// changed\n")

    assert cache_key(source_at(function_dir), wit_dir) != before


@pytest.mark.parametrize(
    "generated",
    [
        "__pycache__/app.cpython-311.pyc",
        "__pycache__/summary.cpython-314.pyc",
        "app.pyc",
        "wit_world/__init__.py",
        "wit_world/imports/records.py",
        "componentize_py_async_support/__init__.py",
        "componentize_py_types.py",
        "componentize_py_runtime.pyi",
        "poll_loop.py",
    ],
)
def test_the_key_ignores_generated_files(function_dir: Path, wit_dir: Path, generated: str) -> None:
    before = cache_key(source_at(function_dir), wit_dir)
    path = function_dir / generated
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"generated, not a source")

    assert cache_key(source_at(function_dir), wit_dir) == before


@pytest.mark.components
def test_an_unchanged_function_is_served_from_the_cache(built_functions: list[str]) -> None:
    assert FUNCTION in built_functions
    settings = load_settings(home=TEST_HOME, functions_dirs=FUNCTION_DIRS)
    (source,) = [s for s in discover_functions(settings.functions_dirs) if s.name == FUNCTION]
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    steps: list[str] = []

    artifact, built = build_function(source, settings.wit_dir, cache, create_engine(), progress=steps.append)

    assert built is False
    assert steps == []
    assert artifact.key == cache_key(source, settings.wit_dir)
    assert artifact.cwasm_path.is_file()


@pytest.mark.components
@pytest.mark.parametrize(
    "rust_backtrace",
    [
        None,
        "1",
    ],
)
def test_componentize_reports_a_syntax_error_in_the_function(
    function_dir: Path, wit_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rust_backtrace: str | None
) -> None:
    monkeypatch.delenv("RUST_LIB_BACKTRACE", raising=False)
    if rust_backtrace is None:
        monkeypatch.delenv("RUST_BACKTRACE", raising=False)
    else:
        monkeypatch.setenv("RUST_BACKTRACE", rust_backtrace)
    source = source_at(function_dir)
    (function_dir / "app.py").write_text("def handle(:\n    pass\n")
    out = tmp_path / "out.wasm"

    with pytest.raises(BuildError, match=f"componentize-py failed for {FUNCTION}") as failure:
        componentize(source, wit_dir, out)

    assert "SyntaxError: invalid syntax" in str(failure.value)
    assert "app.py, line 1" in str(failure.value)
    assert not out.exists()
