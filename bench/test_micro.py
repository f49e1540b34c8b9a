"""Microbenchmarks of the invocation path's parts (pytest-benchmark). Run by `make bench`, not `make test`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.conftest import Parts
from host.audit.trail import AuditLog
from host.auth import TokenVerifier, issue_dev_token
from host.config import load_settings
from host.policy.document import build_input
from host.policy.engine import RegoPolicyEngine
from host.types import AuditEvent, Subject

FUNCTIONS = ["patient_lookup", "clinical_calc"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_instantiate(benchmark: BenchmarkFixture, parts: Parts, name: str) -> None:
    function = parts.functions[name]
    benchmark(lambda: parts.sandbox.prepare(function.component, function.limits).discard())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_invoke_cold(benchmark: BenchmarkFixture, parts: Parts, name: str) -> None:
    """Instantiate and first call."""
    f = parts.functions[name]

    def cold() -> Any:
        prepared = parts.sandbox.prepare(f.component, f.limits)  # type: ignore[arg-type]
        return parts.sandbox.call(prepared, f.request, f.scope, f.limits)

    benchmark(cold)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_invoke_prepared(benchmark: BenchmarkFixture, parts: Parts, name: str) -> None:
    """A call on a fresh instance prepared and warmed ahead of time (preparation not timed)."""
    f = parts.functions[name]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        prepared = parts.sandbox.prepare(f.component, f.limits, f.warmup)  # type: ignore[arg-type]
        return (prepared,), {}

    benchmark.pedantic(
        lambda prepared: parts.sandbox.call(prepared, f.request, f.scope, f.limits), setup=setup, rounds=200
    )


def test_invoke_reused(benchmark: BenchmarkFixture, parts: Parts) -> None:
    """clinical_calc on one warm instance, reused (allowed: it reads no records, gets no patient)."""
    f = parts.functions["clinical_calc"]
    prepared = parts.sandbox.prepare(f.component, f.limits, f.warmup, reusable=True)  # type: ignore[arg-type]
    try:
        benchmark(lambda: parts.sandbox.call(prepared, f.request, f.scope, f.limits))
    finally:
        prepared.discard()


@pytest.fixture(scope="module")
def policy(parts: Parts) -> Iterator[RegoPolicyEngine]:
    engine = RegoPolicyEngine.from_directory(parts.settings.policy_dir, 1.0)
    yield engine
    engine.close()


def test_policy_decision(benchmark: BenchmarkFixture, policy: RegoPolicyEngine) -> None:
    patient = {"id": "p-1", "care_team": [], "consent_directives": []}
    document = build_input(Subject("dr-bench", "authorized_medical_staff"), "read-summary", "TREAT", patient)
    assert benchmark(lambda: policy.decide(document)).allow


def test_audit_append(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    """One durable record (synchronous=FULL): mostly the disk's fsync."""
    log = AuditLog(tmp_path / "audit.db")

    def append() -> Any:
        return log.append(AuditEvent(uuid.uuid4().hex, "u", "r", "f", "p", "TREAT", "d", True, (), "ok", 1.0))

    try:
        benchmark(append)
    finally:
        log.close()


@pytest.mark.parametrize("cached", [False, True], ids=["verify", "cached"])
def test_token_check(benchmark: BenchmarkFixture, tmp_path: Path, cached: bool) -> None:
    settings = load_settings(home=tmp_path, token_cache_size=4096 if cached else 0)
    verifier = TokenVerifier.from_settings(settings)
    header = "Bearer " + issue_dev_token(settings, "dr-bench", "authorized_medical_staff")
    assert benchmark(lambda: verifier.verify(header)).id == "dr-bench"
