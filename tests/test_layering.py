"""Dependencies point one way: leaves import nothing from the package, and only the right modules
import FastAPI or wasmtime. Parsed from the source, so a new import that breaks the line fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HOST = Path(__file__).resolve().parent.parent / "host"
LEAVES = {"config", "errors", "types"}
MAY_IMPORT = {
    # bench's floor is a bare FastAPI app, served by uvicorn, to measure the stack without wardfn.
    "fastapi": {"app", "bench"},
    "starlette": {"app"},
    "uvicorn": {"cli", "bench"},
    "wasmtime": {"runtime", "wasm_values", "registry", "build", "assembly"},
    # Metrics live in one module that services call; only it knows prometheus-client.
    "prometheus_client": {"metrics"},
    # The broker client is translated into host errors in one module.
    "pika": {"amqp"},
    # The Kubernetes schemas are the deploy module's business alone.
    "kubernetes_validate": {"deploy"},
    # The database drivers: connecting, dialects and driver errors live in one module.
    "sqlite3": {"database"},
    "psycopg": {"database"},
    "psycopg_pool": {"database"},
}
# Modules that nothing but the top (app, cli, assembly, bench) may import.
TOP = {"app", "cli", "assembly", "bench"}


def _files(module: str) -> list[Path]:
    """A module's source: `host/<module>.py`, or every file of the package `host/<module>/`."""
    package = HOST / module
    return sorted(package.glob("*.py")) if package.is_dir() else [HOST / f"{module}.py"]


def _imports(module: str) -> set[str]:
    found: set[str] = set()
    for node in (n for path in _files(module) for n in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


MODULES = sorted({p.stem for p in HOST.glob("*.py") if p.stem != "__init__"} | {"cli", "bench"})


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_leaves_import_nothing_from_host(module: str) -> None:
    assert not {name for name in _imports(module) if name == "host" or name.startswith("host.")}


@pytest.mark.parametrize("module", MODULES)
def test_frameworks_stay_where_they_belong(module: str) -> None:
    for name in _imports(module):
        root = name.split(".")[0]
        if root in MAY_IMPORT:
            assert module in MAY_IMPORT[root], f"host/{module}.py imports {name}"


@pytest.mark.parametrize("module", sorted(set(MODULES) - TOP))
def test_services_never_import_the_top(module: str) -> None:
    for name in _imports(module):
        if name.startswith("host."):
            assert name.removeprefix("host.").split(".")[0] not in TOP, f"host/{module}.py imports {name}"


def test_reading_the_store_imports_neither_the_settings_machinery_nor_the_postgresql_driver() -> None:
    # The process-per-call baseline of `wardfn bench cold-start` imports just these; were pydantic
    # (the settings) or psycopg pulled in, it would pay ~200 ms of imports and flatter Wasm.
    import subprocess
    import sys

    probe = (
        "import sys; import host.store, host.encryption; "
        "print(sorted(m for m in ('pydantic', 'psycopg', 'psycopg_pool', 'fastapi') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
