"""Building functions from the command line, side by side, with a line per function and its time.

componentize-py runs in a subprocess and wasmtime's compiler runs with the GIL released (it is
called through ctypes), so threads are enough to run builds side by side. Each build alone keeps
about one core busy (measured: 100 per cent of a core for componentize-py, 106 for the compile),
so the gain is on a machine with idle cores: on a 2-core machine already busy with other work,
two functions took 82 s two at a time and 80 s one after the other.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from rich.console import Console

from host.catalogue.artifacts import Artifact, ArtifactCache
from host.catalogue.build import Progress, build_function, cache_key
from host.catalogue.manifest import FunctionSource, discover_functions
from host.config import Settings
from host.errors import FunctionNotFound
from host.runtime.engine import create_engine

# Each build holds about 400 MB of memory (componentize-py's and the compiler's peaks, measured).
MAX_JOBS = 4


def default_jobs() -> int:
    """Builds at once: one per core this process may run on, at most MAX_JOBS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_JOBS))


class _Board:
    """What each running build is doing, shown on one status line (on a terminal)."""

    def __init__(self, console: Console) -> None:
        self._steps: dict[str, str] = {}
        self._lock = threading.Lock()
        self._status = console.status("building") if console.is_terminal else None

    def __enter__(self) -> _Board:
        if self._status is not None:
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

    def step(self, name: str, step: str | None) -> None:
        with self._lock:
            if step is None:
                self._steps.pop(name, None)
            else:
                self._steps[name] = step
            if self._status is not None:
                self._status.update("building " + ", ".join(f"{n} ({s})" for n, s in self._steps.items()))


# The steps build_function reports, and how a finished build's line names them.
_PHASES = {"componentize-py": "componentize-py", "compiling with wasmtime": "wasmtime"}


Builder = Callable[[FunctionSource, Progress], tuple[Artifact, bool]]


def _build_one(source: FunctionSource, build: Builder, board: _Board) -> tuple[Artifact, bool, dict[str, float]]:
    """Build one function (in a worker thread), timing its steps: componentize-py, then the compile."""
    phases: dict[str, float] = {}
    step, since = "", time.monotonic()

    def progress(message: str) -> None:
        nonlocal step, since
        now = time.monotonic()
        phases[step] = now - since
        step, since = message.split(": ", 1)[-1], now
        board.step(source.name, step)

    try:
        artifact, built = build(source, progress)
    finally:
        board.step(source.name, None)
    phases[step] = time.monotonic() - since
    return artifact, built, phases


def _timing(seconds: float, phases: dict[str, float]) -> str:
    parts = [f"{label} {phases[step]:.1f} s" for step, label in _PHASES.items() if step in phases]
    return f"{seconds:.1f} s" + (f" ({', '.join(parts)})" if parts else "")


def build_functions(settings: Settings, names: list[str], force: bool, console: Console, jobs: int = 1) -> None:
    """Build the named functions (all when none are named), `jobs` at a time; unchanged ones come
    from the cache. Prints one line per function: up to date, or built and how long it took."""
    sources = discover_functions(settings.functions_dirs)
    known = {s.name for s in sources}
    unknown = sorted(set(names) - known)
    if unknown:
        raise FunctionNotFound(f"no function named {', '.join(unknown)}; found: {', '.join(sorted(known))}")
    chosen = [s for s in sources if not names or s.name in names]
    # Also creates the cache's signing key, once, before any build thread could race to.
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    with console.status("checking the cache"):
        cached = (
            [None] * len(chosen)
            if force
            else cache.lookup_all([(s.name, cache_key(s, settings.wit_dir)) for s in chosen])
        )
    total, done = len(chosen), 0

    def report(source: FunctionSource, artifact: Artifact, state: str) -> None:
        nonlocal done
        done += 1
        line = f"[{done}/{total}] {source.name} {source.manifest.version}: {state}"
        console.print(f"{line} (sha256:{artifact.cwasm_sha256[:12]})", highlight=False, soft_wrap=True)

    todo = []
    for source, artifact in zip(chosen, cached, strict=True):
        if artifact is None:
            todo.append(source)
        else:
            report(source, artifact, "up to date")
    if not todo:
        return
    jobs = max(1, min(jobs, len(todo)))
    console.print(
        f"building {len(todo)} of {total} functions, {jobs} at a time, into {settings.artifact_dir}:"
        f" {', '.join(s.name for s in todo)}",
        highlight=False,
        soft_wrap=True,  # one line per message, whatever the terminal's (or a log's) width
    )
    engine = create_engine()

    def build(source: FunctionSource, progress: Progress) -> tuple[Artifact, bool]:
        return build_function(source, settings.wit_dir, cache, engine, progress, force)

    failure: BaseException | None = None
    with _Board(console) as board, ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="wardfn-build") as pool:
        queue = list(todo)
        running: dict[Future[tuple[Artifact, bool, dict[str, float]]], tuple[FunctionSource, float]] = {}
        while running or (queue and failure is None):
            while queue and failure is None and len(running) < jobs:
                source = queue.pop(0)
                if not console.is_terminal:  # no status line to show it on: say it started
                    console.print(f"{source.name}: building", highlight=False, soft_wrap=True)
                future = pool.submit(_build_one, source, build, board)
                running[future] = (source, time.monotonic())
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                source, started = running.pop(future)
                seconds = time.monotonic() - started
                try:
                    artifact, built, phases = future.result()
                except Exception as exc:
                    console.print(f"{source.name}: failed after {seconds:.1f} s", highlight=False, soft_wrap=True)
                    failure = failure or exc  # the builds under way finish; no new one starts
                    continue
                report(source, artifact, f"built in {_timing(seconds, phases)}" if built else "up to date")
    if failure is not None:
        raise failure
