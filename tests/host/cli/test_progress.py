"""`wardfn build`'s driver: builds side by side, one line per function with its time, and a failure
that stops new builds without abandoning the ones under way.

componentize-py is swapped for a stand-in that writes a made-up artifact into the real cache:
what is under test is the scheduling and the lines, not the compiler (tests/host/catalogue
builds the real thing)."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import pytest
from rich.console import Console

from host.catalogue.artifacts import Artifact, ArtifactCache
from host.catalogue.build import Progress
from host.catalogue.manifest import FunctionSource
from host.cli import progress
from host.config import Settings, load_settings
from host.errors import BuildError

MANIFEST = 'name = "{name}"\nversion = "1.2.3"\ndescription = "A test function."\naction = "access_patient_data"\n'
NAMES = ["alpha", "beta", "delta", "gamma"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    for name in NAMES:
        (tmp_path / "functions" / name).mkdir(parents=True)
        (tmp_path / "functions" / name / "function.toml").write_text(MANIFEST.format(name=name))
        (tmp_path / "functions" / name / "app.py").write_text("")
    return load_settings(home=tmp_path / "home", functions_dirs=[tmp_path / "functions"])


class FakeBuilds:
    """Stands in for build_function: reports the two steps, then stores a made-up artifact."""

    def __init__(self, fail: set[str] | None = None, together: int = 1, hold: str | None = None) -> None:
        self.fail = fail or set()
        # The function whose build waits until the console reports a failure (see run's `out`).
        self.hold = hold
        self.out = io.StringIO()
        self.started: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        # With together > 1, each build waits until that many are running at once.
        self._barrier = threading.Barrier(together, timeout=10) if together > 1 else None

    def __call__(
        self, source: FunctionSource, wit_dir: Path, cache: ArtifactCache, engine: object, report: Progress, force: bool
    ) -> tuple[Artifact, bool]:
        with self._lock:
            self.started.append(source.name)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            report(f"{source.name}: componentize-py")
            if self._barrier is not None:
                self._barrier.wait()
            if source.name in self.fail:
                raise BuildError(f"componentize-py failed for {source.name}")
            if source.name == self.hold:
                for _ in range(1000):  # at most 10 s
                    if ": failed after " in self.out.getvalue():
                        break
                    threading.Event().wait(0.01)
            report(f"{source.name}: compiling with wasmtime")
            key = progress.cache_key(source, wit_dir)
            return cache.store(source.name, source.manifest.version, key, b"wasm", source.name.encode()), True
        finally:
            with self._lock:
                self.running -= 1


def run(settings: Settings, fake: FakeBuilds, monkeypatch: pytest.MonkeyPatch, jobs: int) -> list[str]:
    monkeypatch.setattr(progress, "build_function", fake)
    out = fake.out
    try:
        progress.build_functions(settings, [], force=False, console=Console(file=out, width=40), jobs=jobs)
    finally:
        lines = out.getvalue().splitlines()
    return lines


def test_each_function_gets_one_line_with_its_time_and_steps(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = run(settings, FakeBuilds(), monkeypatch, jobs=1)

    assert lines[0].startswith("building 4 of 4 functions, 1 at a time, into ")
    built = [line for line in lines if " built in " in line]
    assert [line.split()[1] for line in built] == NAMES
    for index, line in enumerate(built, 1):
        # One line each, however narrow the console: logs are read by grep.
        assert re.fullmatch(
            rf"\[{index}/4\] \w+ 1\.2\.3: built in [\d.]+ s \(componentize-py [\d.]+ s, wasmtime [\d.]+ s\)"
            r" \(sha256:[0-9a-f]{12}\)",
            line,
        ), line
    # Off a terminal there is no status line, so a build says when it starts.
    assert [line for line in lines if line.endswith(": building")] == [f"{name}: building" for name in NAMES]


def test_what_is_in_the_cache_is_up_to_date_and_not_built_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(settings, FakeBuilds(), monkeypatch, jobs=2)
    again = FakeBuilds()

    lines = run(settings, again, monkeypatch, jobs=2)

    assert again.started == []
    assert [line.split(":")[0] for line in lines] == [f"[{i}/4] {n} 1.2.3" for i, n in enumerate(NAMES, 1)]
    assert all(": up to date (sha256:" in line for line in lines)


def test_builds_run_side_by_side_up_to_jobs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBuilds(together=2)

    lines = run(settings, fake, monkeypatch, jobs=2)

    assert fake.most_at_once == 2
    assert sorted(fake.started) == NAMES
    assert len([line for line in lines if " built in " in line]) == 4


def test_a_failed_build_stops_new_ones_and_lets_the_running_one_finish(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # beta, started beside alpha, finishes only once the failure of alpha has been reported.
    fake = FakeBuilds(fail={"alpha"}, hold="beta")

    with pytest.raises(BuildError, match="componentize-py failed for alpha"):
        run(settings, fake, monkeypatch, jobs=2)

    lines = fake.out.getvalue().splitlines()
    assert sorted(fake.started) == ["alpha", "beta"]
    assert re.fullmatch(r"alpha: failed after [\d.]+ s", lines[-2]), lines
    assert re.fullmatch(r"\[1/4\] beta 1\.2\.3: built in .*", lines[-1]), lines
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    sources = {s.name: s for s in progress.discover_functions(settings.functions_dirs)}
    assert cache.lookup("beta", progress.cache_key(sources["beta"], settings.wit_dir)) is not None
    assert cache.lookup("delta", progress.cache_key(sources["delta"], settings.wit_dir)) is None


def test_default_jobs_is_one_per_core_and_at_most_four() -> None:
    assert 1 <= progress.default_jobs() <= progress.MAX_JOBS == 4
