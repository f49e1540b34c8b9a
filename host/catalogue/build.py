"""`wardfn build`: componentize-py, then wasmtime precompilation, into the artifact cache.

The cache key covers everything the compiled code depends on: the function's
sources, the shared guest modules built into it (`_shared/` beside it), the WIT
contract, the componentize-py and wasmtime versions and the engine settings. An
unchanged function is never rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version as package_version
from pathlib import Path

from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component

from host.catalogue.artifacts import Artifact, ArtifactCache
from host.catalogue.manifest import FunctionSource
from host.errors import BuildError
from host.runtime.engine import engine_fingerprint

WORLD = "patient-function"
BUILD_FORMAT = "wardfn-build-1"
# Generated or compiled files that do not change what the function does.
IGNORED_PARTS = {
    "__pycache__",
    "wit_world",
    "componentize_py_types",
    "componentize_py_types.py",
    "componentize_py_runtime.pyi",
    "componentize_py_async_support",
    "poll_loop.py",
}

Progress = Callable[[str], None]
# componentize-py's own entry point, run by this interpreter rather than a PATH lookup.
_COMPONENTIZE_PY = "import sys, componentize_py; sys.argv[0] = 'componentize-py'; sys.exit(componentize_py.script())"


def _source_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not IGNORED_PARTS.intersection(p.relative_to(root).parts) and p.suffix != ".pyc"
    )


def _python_path(source: FunctionSource) -> list[Path]:
    """What componentize-py imports from: the function's directory, then the shared guest modules."""
    return [source.path] if source.shared_path is None else [source.path, source.shared_path]


def cache_key(source: FunctionSource, wit_dir: Path) -> str:
    """SHA-256 over the sources (the function's and the shared modules'), the WIT, the toolchain
    versions and the engine settings."""
    digest = hashlib.sha256()
    for line in (BUILD_FORMAT, engine_fingerprint(), f"componentize-py={package_version('componentize-py')}"):
        digest.update(line.encode() + b"\0")
    roots = [("wit", wit_dir), ("src", source.path)]
    if source.shared_path is not None:
        roots.append(("shared", source.shared_path))
    for label, root in roots:
        for path in _source_files(root):
            digest.update(f"{label}/{path.relative_to(root).as_posix()}".encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def generate_bindings(wit_dir: Path, out: Path) -> None:
    """componentize-py's Python bindings for the WIT world, to run guest code under CPython (tests)."""
    command = [sys.executable, "-c", _COMPONENTIZE_PY, "-d", str(wit_dir), "-w", WORLD, "bindings", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"componentize-py could not generate bindings:\n{(done.stderr or done.stdout).strip()[:2000]}")


def componentize(source: FunctionSource, wit_dir: Path, out: Path) -> None:
    """Run componentize-py on the function's `app` module; the error carries its output."""
    python_path = [arg for path in _python_path(source) for arg in ("-p", str(path))]
    command = [
        sys.executable, "-c", _COMPONENTIZE_PY,
        "-d", str(wit_dir), "-w", WORLD, "componentize", *python_path, "app", "-o", str(out),
    ]  # fmt: skip
    # A Rust backtrace would push the Python error the user needs out of the message.
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).split("\nStack backtrace:")[0].strip()[:2000]
        raise BuildError(f"componentize-py failed for {source.name}:\n{detail}")


def compile_component(engine: Engine, wasm: bytes, name: str) -> bytes:
    """Compile a component to native code for this engine and serialize it."""
    try:
        return bytes(Component(engine, wasm).serialize())
    except WasmtimeError as exc:
        raise BuildError(f"wasmtime could not compile {name}: {exc}") from exc


def build_function(
    source: FunctionSource,
    wit_dir: Path,
    cache: ArtifactCache,
    engine: Engine,
    progress: Progress = lambda _: None,
    force: bool = False,
) -> tuple[Artifact, bool]:
    """The function's verified artifact, built if missing; the flag says whether it was built now."""
    key = cache_key(source, wit_dir)
    if not force:
        existing = cache.lookup(source.name, key)
        if existing is not None:
            return existing, False
    with tempfile.TemporaryDirectory(prefix="wardfn-build-") as tmp:
        wasm_path = Path(tmp) / f"{source.name}.wasm"
        progress(f"{source.name}: componentize-py")
        componentize(source, wit_dir, wasm_path)
        wasm = wasm_path.read_bytes()
    progress(f"{source.name}: compiling with wasmtime")
    cwasm = compile_component(engine, wasm, source.name)
    progress(f"{source.name}: caching")
    return cache.store(source.name, source.manifest.version, key, wasm, cwasm), True
