"""The prepared pool against the real hostile component: failing warm-ups back off, memory has a budget."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import cache_key
from host.catalogue.manifest import discover_functions
from host.catalogue.registry import limits_for
from host.metrics import Metrics
from host.runtime.calls import FunctionRequest, SandboxLimits, Warmup
from host.runtime.engine import EpochTicker, create_engine
from host.runtime.pool import InstancePool
from host.runtime.sandbox import Sandbox
from host.types import Scope
from tests.conftest import settings_for

pytestmark = pytest.mark.components

PATIENT = "patient-a"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def parts(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Any, Any]]:
    settings = settings_for(tmp_path_factory.mktemp("pool") / "unused.db")
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    engine = create_engine()
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    ticker.start()
    sandbox = Sandbox(engine, lambda patient_id, resource_type: [], settings.epoch_tick_ms)
    [source] = [source for source in discover_functions(settings.functions_dirs) if source.name == "hostile"]
    artifact = cache.lookup(source.name, cache_key(source, settings.wit_dir))
    assert artifact is not None
    yield sandbox, sandbox.load(Path(artifact.cwasm_path)), limits_for(source.manifest, settings)
    sandbox.runner.close()
    ticker.stop()


def _warmup(args: dict[str, Any]) -> Warmup:
    return Warmup(FunctionRequest(PATIENT, "TREAT", args), Scope(PATIENT, frozenset({"Patient"})), lambda p, r: [])


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_failing_warm_up_backs_off_to_its_ceiling_and_recovers(
    parts: tuple[Sandbox, Any, SandboxLimits], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox, component, limits = parts
    metrics = Metrics()
    ceiling = 0.4
    pool = InstancePool(sandbox, size=1, metrics=metrics, backoff_initial_s=0.05, backoff_max_s=ceiling)
    warmup = _warmup({"mode": "raise"})  # traps in every warm-up
    pool.register("hostile", component, limits, warmup=warmup)
    caplog.set_level(logging.INFO, logger="wardfn.pool")
    pool.start()
    try:
        seen = _attempt_times(pool, "hostile", window_s=3.0)
        gaps = [later - earlier for earlier, later in zip(seen, seen[1:], strict=False)]
        # Retried every wake (as before) would be hundreds of attempts in 3 s; backing off from 50 ms
        # to a 400 ms ceiling allows about ten. The gaps grow, and none after the ceiling is short.
        assert 4 <= len(seen) <= 14, seen
        assert gaps[-1] >= 0.8 * ceiling and gaps[-1] > 2 * gaps[0], gaps
        assert _sample(metrics, "wardfn_warmup_failures_total", function="hostile") == pool.attempts("hostile")
        assert _sample(metrics, "wardfn_warmup_backoff_seconds", function="hostile") == ceiling
        failing = [json.loads(r.message) for r in caplog.records if "warmup_failing" in r.message]
        assert len(failing) == 1 and failing[0]["function"] == "hostile"  # one line per state change

        warmup.request.args["mode"] = "ok"  # the function is fixed: the next attempt keeps an instance
        deadline = time.monotonic() + 10
        while _sample(metrics, "wardfn_instance_pool_ready", function="hostile") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sample(metrics, "wardfn_instance_pool_ready", function="hostile") == 1
        assert _sample(metrics, "wardfn_warmup_backoff_seconds", function="hostile") == 0
        assert [r for r in caplog.records if "warmup_recovered" in r.message]
    finally:
        pool.stop()
        pool.unregister("hostile")


def test_an_instance_that_grows_past_its_share_while_warming_is_not_kept(
    parts: tuple[Sandbox, Any, SandboxLimits],
) -> None:
    sandbox, component, limits = parts
    metrics = Metrics()
    pool = InstancePool(sandbox, size=2, metrics=metrics, instance_memory_bytes=64 * MIB, backoff_max_s=60)
    pool.register("hostile", component, limits, warmup=_warmup({"mode": "fill", "mib": 100}))
    pool.start()
    try:
        deadline = time.monotonic() + 10
        while pool.attempts("hostile") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        # Within its own 256 MiB cap, but past the pool's 64 MiB share: not kept, and backed off.
        assert _sample(metrics, "wardfn_instance_pool_ready", function="hostile") == 0
        assert pool.held_bytes == 0
        assert _sample(metrics, "wardfn_warmup_failures_total", function="hostile") >= 1
    finally:
        pool.stop()
        pool.unregister("hostile")


def test_the_pool_stays_inside_its_memory_budget(parts: tuple[Sandbox, Any, SandboxLimits]) -> None:
    sandbox, component, limits = parts
    metrics = Metrics()
    # Each warmed instance holds a touched 8 MiB more than the host had: a 20 MiB budget keeps one or two.
    pool = InstancePool(sandbox, size=6, metrics=metrics, memory_budget_bytes=20 * MIB)
    pool.register("hostile", component, limits, warmup=_warmup({"mode": "fill", "mib": 8}))
    pool.start()
    try:
        deadline = time.monotonic() + 15
        while pool.attempts("hostile") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        ready = _sample(metrics, "wardfn_instance_pool_ready", function="hostile")
        assert 1 <= ready < 6
        assert 0 < pool.held_bytes <= 20 * MIB
        assert _sample(metrics, "wardfn_instance_pool_memory_bytes") == pool.held_bytes
        # Taking one frees its share: the pool makes another, still inside the budget.
        taken = pool.take("hostile", component, limits)
        taken.discard()
        assert pool.held_bytes <= 20 * MIB
    finally:
        pool.stop()
        pool.unregister("hostile")


def _attempt_times(pool: InstancePool, key: str, window_s: float) -> list[float]:
    """When the pool's attempts for `key` were seen to happen, over `window_s`, polled every 5 ms."""
    seen: list[float] = []
    count = 0
    started = time.monotonic()
    while time.monotonic() - started < window_s:
        now = pool.attempts(key)
        if now != count:
            seen.append(time.monotonic())
            count = now
        time.sleep(0.005)
    return seen
