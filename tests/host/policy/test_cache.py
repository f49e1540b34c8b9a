"""The decision cache over real engines: keyed by the whole input, bounded, emptied when the policy
changes, and never consulted while the engine is unhealthy."""

from __future__ import annotations

import copy
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from host.config import PROJECT_ROOT
from host.errors import PolicyUnavailable
from host.policy.bundle import write_bundle
from host.policy.cache import CachingPolicyEngine
from host.policy.engine import RegoPolicyEngine
from host.policy.opa import OpaPolicyEngine
from host.policy.table import DEFAULT_TABLE, load_table
from tests.opa_server import OpaServer

HOST_CASES = [c for c in load_table(DEFAULT_TABLE) if "subject" in c["input"]]
ALLOWED = next(c["input"] for c in HOST_CASES if c["allow"])


def rego(policy_dir: Path = PROJECT_ROOT / "policies") -> RegoPolicyEngine:
    return RegoPolicyEngine.from_directory(policy_dir, timeout_s=5.0)


def test_the_same_input_is_answered_from_the_cache_with_a_fresh_id() -> None:
    cache = CachingPolicyEngine(rego(), max_entries=100)
    try:
        first = cache.decide(ALLOWED)
        second = cache.decide(copy.deepcopy(ALLOWED))
        assert (first.cached, second.cached) == (False, True)
        assert second.id != first.id
        assert (second.allow, second.obligations, second.revision, second.input_hash) == (
            first.allow,
            first.obligations,
            first.revision,
            first.input_hash,
        )
        assert (cache.stats.hits, cache.stats.misses) == (1, 1)
        assert cache.stats.hit_rate == 0.5
    finally:
        cache.close()


def test_any_difference_in_the_input_is_another_entry() -> None:
    cache = CachingPolicyEngine(rego(), max_entries=100)
    try:
        cache.decide(ALLOWED)
        off_team = copy.deepcopy(ALLOWED)
        off_team["patient"]["care_team"] = []
        decision = cache.decide(off_team)
        assert decision.cached is False and decision.allow is False
        assert cache.stats.misses == 2 and len(cache) == 2
    finally:
        cache.close()


def test_every_table_row_gets_the_same_answer_cached_or_not() -> None:
    cache = CachingPolicyEngine(rego(), max_entries=1000)
    try:
        for _ in range(2):
            for case in HOST_CASES:
                assert cache.decide(case["input"]).allow is case["allow"], case["name"]
        assert cache.stats.hits == len(HOST_CASES)
    finally:
        cache.close()


def test_the_cache_is_bounded() -> None:
    cache = CachingPolicyEngine(rego(), max_entries=3)
    try:
        for case in HOST_CASES[:10]:
            cache.decide(case["input"])
        assert len(cache) == 3 and cache.stats.evictions == 7
        assert cache.decide(HOST_CASES[0]["input"]).cached is False  # the oldest went first
    finally:
        cache.close()


def test_size_zero_turns_it_off() -> None:
    cache = CachingPolicyEngine(rego(), max_entries=0)
    try:
        cache.decide(ALLOWED)
        assert cache.decide(ALLOWED).cached is False and len(cache) == 0
    finally:
        cache.close()


def test_a_policy_change_empties_the_cache(tmp_path: Path) -> None:
    cache = CachingPolicyEngine(rego(), max_entries=100)
    stricter = tmp_path / "policy"
    stricter.mkdir()
    text = (PROJECT_ROOT / "policies" / "his.rego").read_text(encoding="utf-8")
    (stricter / "his.rego").write_text(text + '\ndenials contains "closed for maintenance" if true\n', "utf-8")
    old = cache.engine
    try:
        assert cache.decide(ALLOWED).allow is True
        cache.engine = rego(stricter)  # the policy the engine enforces has changed
        decision = cache.decide(ALLOWED)
        assert decision.cached is False and decision.allow is False
        assert "closed for maintenance" in decision.reasons
        assert cache.stats.clears == 1
    finally:
        old.close()
        cache.close()


def test_never_consulted_while_the_engine_is_unhealthy(tmp_path: Path) -> None:
    server = OpaServer.with_policy(tmp_path)
    cache = CachingPolicyEngine(OpaPolicyEngine(server.url, timeout_s=0.5, health_interval_s=0.1), max_entries=100)
    try:
        assert cache.decide(ALLOWED).allow is True
        assert cache.decide(ALLOWED).cached is True
        server.stop()
        deadline = time.monotonic() + 5
        while cache.healthy() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.healthy() is False
        for _ in range(10):
            with pytest.raises(PolicyUnavailable):
                cache.decide(ALLOWED)
        assert cache.stats.bypassed == 10 and len(cache) == 0
    finally:
        cache.close()
        server.stop()


def _bundle_dir(policy_dir: Path, into: Path) -> str:
    """The bundle of `policy_dir` unpacked into the directory `into`, file by file in place (so that
    `opa run --watch` sees the files change); its revision."""
    archive = into.with_suffix(".tar.gz")
    revision = write_bundle(policy_dir, archive)
    unpacked = into.with_suffix(".new")
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(unpacked, filter="data")
    for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
        target = into / path.relative_to(unpacked)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return revision


def test_a_new_bundle_in_the_sidecar_empties_the_cache_even_on_hits(tmp_path: Path) -> None:
    stricter = tmp_path / "stricter"
    stricter.mkdir()
    text = (PROJECT_ROOT / "policies" / "his.rego").read_text(encoding="utf-8")
    (stricter / "his.rego").write_text(text + '\ndenials contains "closed for maintenance" if true\n', "utf-8")
    served = tmp_path / "served"
    first = _bundle_dir(PROJECT_ROOT / "policies", served)
    server = OpaServer(tmp_path, served, extra_args=("--watch",))
    cache = CachingPolicyEngine(OpaPolicyEngine(server.url, timeout_s=1.0, health_interval_s=0.1), max_entries=100)
    try:
        assert cache.decide(ALLOWED).allow is True
        assert cache.decide(ALLOWED).cached is True and cache.revision == first
        second = _bundle_dir(stricter, served)  # OPA --watch loads it
        deadline = time.monotonic() + 10
        while cache.revision != second and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.revision == second, "the monitor reports the new bundle's revision"
        decision = cache.decide(ALLOWED)
        assert decision.cached is False and decision.allow is False
        assert "closed for maintenance" in decision.reasons and decision.revision == second
    finally:
        cache.close()
        server.stop()
