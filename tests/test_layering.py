"""Dependencies point one way. Each package of `host/` has "never" rules, each third-party library one
home (its driver), and the leaves import nothing from the package. Parsed from the source, so a new
import that breaks the line fails here, naming the rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HOST = Path(__file__).resolve().parent.parent / "host"

# Modules directly in host/ that import nothing from host.
LEAVES = {"config", "errors", "types"}

# The top: the composition root, HTTP, the command line and the benchmarks. Nothing below them calls up.
TOP = {"assembly", "http", "cli", "bench"}

# What each unit (a package, or a module directly in host/) must never import, and why.
NEVER: dict[str, tuple[set[str], str]] = {
    "runtime": (
        {"store", "data", "catalogue", "audit", "service"} | TOP,
        "the runtime runs what it is handed: records reach it through callables and a scope, never the store",
    ),
    "catalogue": (
        {"store", "data", "audit", "service"} | TOP,
        "the catalogue knows functions, not patients: warm-up data is its own, never the store's",
    ),
    "policy": (
        {"runtime", "catalogue", "store", "data", "audit", "service"} | TOP,
        "a decision is a function of its input alone",
    ),
    "store": (
        {"runtime", "catalogue", "policy", "data", "audit", "service"} | TOP,
        "the store keeps records and keys; deciding and auditing happen above it",
    ),
    "audit": (
        {"runtime", "catalogue", "policy", "data", "service"} | TOP,
        "the trail records what the service tells it; it shares only the store's database layer",
    ),
    "data": (
        {"runtime", "catalogue", "policy", "audit", "service"} | TOP,
        "generators and imports write through the store, nothing else",
    ),
    "search": (
        {"runtime", "catalogue", "policy", "store", "data", "audit", "service"} | TOP,
        "FHIR search is computation on resources: the store and the warm-up both evaluate it",
    ),
    "privacy": (
        {"runtime", "catalogue"} | TOP,
        "the privacy office reads the trail and acts through the service; it runs no function",
    ),
    "service": (TOP, "services never reach HTTP, the command line or the composition root"),
    "attempts": (
        {"service", "runtime", "store", "audit", "catalogue"} | TOP,
        "an attempt is values, built by the service",
    ),
    "metrics": ({"service"} | TOP, "metrics are a leaf that services call"),
    "keys": ({"service"} | TOP, "key files are a leaf that services call"),
    "auth": ({"service"} | TOP, "token verification is a service of its own"),
    "ratelimit": ({"service"} | TOP, "budgets are a leaf that services call"),
    "deploy": ({"service", "runtime", "store", "audit"} | TOP, "rendering manifests needs no running host"),
    "assembly": ({"http", "cli", "bench"}, "the composition root is below HTTP and the command line"),
    "http": ({"cli", "bench"}, "the HTTP API is served by the command line, never the reverse"),
}

# Third-party libraries and the only units that may import them (their drivers).
MAY_IMPORT: dict[str, set[str]] = {
    # bench's floor is a bare FastAPI app, served by uvicorn, to measure the stack without wardfn.
    "fastapi": {"http", "bench.floor_app"},
    "starlette": {"http"},
    "uvicorn": {"cli.serve"},
    "wasmtime": {"runtime", "catalogue.registry", "catalogue.build", "assembly"},
    "regopy": {"policy.engine"},
    "opa_client": {"policy.opa"},
    "jwt": {"auth"},
    "fhir": {"data.fhir_import"},
    "jsonschema": {"catalogue.arguments"},
    # Metrics live in one module that services call; only it knows prometheus-client.
    "prometheus_client": {"metrics"},
    # The broker client is translated into host errors in one module.
    "pika": {"audit.broker"},
    # The Kubernetes schemas are the deploy module's business alone.
    "kubernetes_validate": {"deploy"},
    # The database drivers: connecting, dialects and driver errors live in one module.
    "sqlite3": {"store.database"},
    "psycopg": {"store.database"},
    "psycopg_pool": {"store.database"},
}

MAX_MODULES_IN_HOST = 15
LONG_MODULE_LINES = 400
MAX_LONG_MODULES = 2


def _modules() -> dict[str, Path]:
    """Every module of host/ by dotted name below host (`runtime.sandbox`, `service`)."""
    return {
        ".".join(path.relative_to(HOST).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(HOST.rglob("*.py"))
    }


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "host":  # `from host import config`
                found.update(f"host.{alias.name}" for alias in node.names)
    return found


def _unit(module: str) -> str:
    return module.split(".")[0]


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_leaves_import_nothing_from_host(module: str) -> None:
    assert not {name for name in _imports(MODULES[module]) if name == "host" or name.startswith("host.")}


@pytest.mark.parametrize("unit", sorted(NEVER))
def test_each_unit_keeps_its_never_rules(unit: str) -> None:
    never, why = NEVER[unit]
    broken = [
        f"host/{MODULES[module].relative_to(HOST)} imports {name}"
        for module in MODULES
        if _unit(module) == unit
        for name in _imports(MODULES[module])
        if name.startswith("host.") and _unit(name.removeprefix("host.")) in never
    ]
    assert not broken, f"{unit} never imports {sorted(never)}: {why}. Broken by: {broken}"


def test_every_unit_has_rules() -> None:
    units = {_unit(m) for m in MODULES} - LEAVES - {"", "__init__"}
    assert units <= set(NEVER) | {"cli", "bench"}, f"give these a line in NEVER: {sorted(units - set(NEVER))}"


@pytest.mark.parametrize("library", sorted(MAY_IMPORT))
def test_each_library_has_one_driver(library: str) -> None:
    allowed = MAY_IMPORT[library]
    for module, path in MODULES.items():
        for name in _imports(path):
            if name.split(".")[0] == library:
                assert any(module == a or module.startswith(f"{a}.") for a in allowed), (
                    f"host/{path.relative_to(HOST)} imports {name}; only {sorted(allowed)} may"
                )


def test_host_keeps_few_modules_at_its_top() -> None:
    top = sorted(p.name for p in HOST.glob("*.py"))
    assert len(top) <= MAX_MODULES_IN_HOST, f"{len(top)} modules directly in host/: group them into packages ({top})"


def test_long_modules_are_few_and_say_why() -> None:
    long = {m: p for m, p in MODULES.items() if len(p.read_text().splitlines()) > LONG_MODULE_LINES}
    assert len(long) <= MAX_LONG_MODULES, f"over {LONG_MODULE_LINES} lines: {sorted(long)}; split them"
    for path in long.values():
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Long because" in docstring, f"host/{path.relative_to(HOST)}: say in its docstring why it is long"


def test_reading_the_store_imports_neither_the_settings_machinery_nor_the_postgresql_driver() -> None:
    # The process-per-call baseline of `wardfn bench cold-start` imports just these; were pydantic
    # (the settings) or psycopg pulled in, it would pay ~200 ms of imports and flatter Wasm.
    import subprocess
    import sys

    probe = (
        "import sys; import host.store.resources, host.store.encryption; "
        "print(sorted(m for m in ('pydantic', 'psycopg', 'psycopg_pool', 'fastapi') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
