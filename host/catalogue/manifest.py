"""Function manifests (`function.toml`): what a function is, what it may read, and its limits."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.errors import ConfigurationError

MANIFEST_FILE = "function.toml"
ENTRY_MODULE = "app"
# Beside the functions in a functions directory: modules every one of them imports (the guest
# helpers), built into each component. Never a function itself: `_` directories are skipped.
SHARED_DIR = "_shared"


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    deadline_ms: int = Field(default=200, gt=0, le=60_000)
    memory_mib: int = Field(default=128, gt=0, le=4096)
    output_kib: int = Field(default=1024, gt=0, le=64 * 1024)


class Manifest(BaseModel):
    """A validated `function.toml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
    description: str = Field(min_length=1)
    action: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    patient: Literal["required", "none"] = "required"
    reads: tuple[str, ...] = Field(default=())
    # The host imports it asks for besides `records`; the decision grants them per invocation
    # (obligations.imports), and only what is both asked and granted is linked.
    imports: tuple[Literal["directory", "pseudonym", "log"], ...] = ()
    # The older spelling of `imports = ["directory"]`.
    directory: bool = False
    # Keep the function's arguments in its audit records (a search's query, say).
    audit_args: bool = False
    # A JSON Schema file beside the manifest that `args` must match before anything runs.
    args_schema: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+\.json$")
    # Serve many invocations from one warm instance. Allowed only for a function that reads no
    # records and receives no patient id: an instance that has read patient records never
    # serves a second invocation.
    reuse_instances: bool = False
    # The arguments of the synthetic call that warms each prepared instance (never patient data).
    warmup_args: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Limits()

    @property
    def asks(self) -> frozenset[str]:
        """The imports the function asks for besides `records`."""
        return frozenset(self.imports) | ({"directory"} if self.directory else set())

    def model_post_init(self, _context: object) -> None:
        for resource_type in self.reads:
            if not resource_type.isidentifier() or not resource_type[0].isupper():
                raise ValueError(f"reads: {resource_type!r} is not a FHIR resource type name")
        if self.reuse_instances and (self.patient != "none" or self.reads):
            raise ValueError(
                'reuse_instances: allowed only with patient = "none" and reads = []; '
                "an instance that has read patient records never serves a second invocation"
            )


def load_manifest(function_dir: Path) -> Manifest:
    """Read and validate `<function_dir>/function.toml`; the error says what to fix."""
    path = function_dir / MANIFEST_FILE
    if not path.is_file():
        raise ConfigurationError(f"{function_dir.name}: no {MANIFEST_FILE}; every function needs a manifest")
    try:
        manifest = Manifest.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"{path}: {problems}") from exc
    if manifest.name != function_dir.name:
        raise ConfigurationError(f"{path}: name {manifest.name!r} must match its directory {function_dir.name!r}")
    if manifest.args_schema and not (function_dir / manifest.args_schema).is_file():
        raise ConfigurationError(f"{path}: args_schema {manifest.args_schema!r} is not a file beside the manifest")
    if not (function_dir / f"{ENTRY_MODULE}.py").is_file():
        raise ConfigurationError(f"{function_dir}: no {ENTRY_MODULE}.py, the module componentize-py builds")
    return manifest


class FunctionSource(BaseModel):
    """A function's directory and its validated manifest."""

    model_config = ConfigDict(frozen=True)

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def shared_path(self) -> Path | None:
        """The functions directory's shared modules (`_shared/` beside the function), if it has any."""
        shared = self.path.parent / SHARED_DIR
        return shared if shared.is_dir() else None


def discover_functions(directories: list[Path]) -> list[FunctionSource]:
    """Every function under the given directories: each subdirectory with a manifest or an app.py."""
    found: dict[str, FunctionSource] = {}
    for directory in directories:
        if not directory.is_dir():
            raise ConfigurationError(f"functions directory {directory} does not exist (WARDFN_FUNCTIONS_DIRS)")
        for child in sorted(directory.iterdir()):
            if not child.is_dir() or child.name.startswith((".", "_")):
                continue  # hidden, or shared modules (SHARED_DIR) and the like: not functions
            if not (child / MANIFEST_FILE).exists() and not (child / f"{ENTRY_MODULE}.py").exists():
                continue
            source = FunctionSource(path=child, manifest=load_manifest(child))
            if source.name in found:
                raise ConfigurationError(
                    f"function {source.name!r} is defined twice: {found[source.name].path}, {child}"
                )
            found[source.name] = source
    return list(found.values())
