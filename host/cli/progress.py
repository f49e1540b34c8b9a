"""Building functions from the command line, with progress on the terminal."""

from __future__ import annotations

from rich.console import Console

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import build_function, cache_key
from host.catalogue.manifest import discover_functions
from host.config import Settings
from host.errors import FunctionNotFound
from host.runtime.engine import create_engine


def build_functions(settings: Settings, names: list[str], force: bool, console: Console) -> None:
    """Build the named functions (all when none are named); unchanged ones come from the cache."""
    sources = discover_functions(settings.functions_dirs)
    known = {s.name for s in sources}
    unknown = sorted(set(names) - known)
    if unknown:
        raise FunctionNotFound(f"no function named {', '.join(unknown)}; found: {', '.join(sorted(known))}")
    chosen = [s for s in sources if not names or s.name in names]
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    engine = create_engine()
    with console.status("checking the cache"):
        cached = (
            [None] * len(chosen)
            if force
            else cache.lookup_all([(s.name, cache_key(s, settings.wit_dir)) for s in chosen])
        )
    for index, (source, artifact) in enumerate(zip(chosen, cached, strict=True), 1):
        label = f"[{index}/{len(chosen)}] {source.name}"
        built = artifact is None
        if artifact is None:
            with console.status(f"{label}: building") as status:

                def progress(step: str, label: str = label) -> None:
                    status.update(f"{label}: {step}")

                artifact, built = build_function(source, settings.wit_dir, cache, engine, progress, force)
        state = "built" if built else "up to date"
        console.print(f"{label} {source.manifest.version}: {state} (sha256:{artifact.cwasm_sha256[:12]})")
