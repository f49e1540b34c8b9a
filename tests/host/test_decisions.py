"""The decision cache: identical inputs answered from memory for a while; failures and doubt never cached."""

from __future__ import annotations

import time
from typing import Any

import pytest

from host.decisions import CachingPolicyEngine
from host.errors import PolicyUnavailable
from host.types import Decision


class CountingEngine:
    revision = "r1"

    def __init__(self) -> None:
        self.calls = 0
        self.up = True
        self.fail = False

    def decide(self, policy_input: dict[str, Any]) -> Decision:
        self.calls += 1
        if self.fail or not self.up:
            raise PolicyUnavailable("down")
        return Decision(id=f"d{self.calls}", allow=policy_input.get("ok") is True)

    def healthy(self) -> bool:
        return self.up


def test_identical_inputs_share_one_decision() -> None:
    engine = CountingEngine()
    cache = CachingPolicyEngine(engine, ttl_s=60, size=10)
    first = cache.decide({"ok": True, "user": {"id": "u", "role": "r"}})
    again = cache.decide({"user": {"role": "r", "id": "u"}, "ok": True})  # key order does not matter
    assert first is again and engine.calls == 1
    assert cache.decide({"ok": False, "user": {"id": "u", "role": "r"}}).allow is False
    assert engine.calls == 2


def test_entries_expire() -> None:
    engine = CountingEngine()
    cache = CachingPolicyEngine(engine, ttl_s=0.05, size=10)
    cache.decide({"ok": True})
    time.sleep(0.1)
    cache.decide({"ok": True})
    assert engine.calls == 2


def test_failures_are_not_cached_and_an_unhealthy_engine_is_asked_again() -> None:
    engine = CountingEngine()
    cache = CachingPolicyEngine(engine, ttl_s=60, size=10)
    engine.fail = True
    with pytest.raises(PolicyUnavailable):
        cache.decide({"ok": True})
    engine.fail = False
    assert cache.decide({"ok": True}).allow is True
    engine.up = False  # the cached allow must not outlive the engine: fail closed
    with pytest.raises(PolicyUnavailable):
        cache.decide({"ok": True})


def test_the_cache_is_bounded_and_can_be_off() -> None:
    engine = CountingEngine()
    cache = CachingPolicyEngine(engine, ttl_s=60, size=2)
    for n in range(3):
        cache.decide({"n": n})
    cache.decide({"n": 0})  # evicted, decided again
    assert engine.calls == 4
    off = CachingPolicyEngine(engine, ttl_s=0, size=10)
    off.decide({"n": 9})
    off.decide({"n": 9})
    assert engine.calls == 6
