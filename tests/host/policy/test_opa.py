"""The OPA sidecar engine against the real OPA server: every way it cannot answer is a deny, never an allow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.errors import ConfigurationError, PolicyUnavailable
from host.policy.bundle import write_bundle
from host.policy.document import DEFAULT_REASON
from host.policy.opa import OpaPolicyEngine
from host.policy.table import DEFAULT_TABLE, load_table
from tests.e2e.server import free_port
from tests.opa_server import OpaServer

HEADER = "package healthcare.his\n\nimport rego.v1\n\n"
ALLOWED = next(c["input"] for c in load_table(DEFAULT_TABLE) if c["allow"] and "subject" in c["input"])


def opa_with(tmp_path: Path, rego: str) -> OpaServer:
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "his.rego").write_text(HEADER + rego, encoding="utf-8")
    bundle = tmp_path / "bundle.tar.gz"
    write_bundle(policy_dir, bundle)
    return OpaServer(tmp_path, bundle)


@pytest.fixture()
def own_opa(tmp_path: Path) -> Iterator[OpaServer]:
    server = OpaServer.with_policy(tmp_path)
    yield server
    server.stop()


def wait_until(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_allows_and_names_the_bundle_revision(opa_server: OpaServer) -> None:
    engine = OpaPolicyEngine(opa_server.url, timeout_s=2.0, health_interval_s=0.2)
    try:
        assert engine.healthy()
        decision = engine.decide(ALLOWED)
        assert decision.allow is True and decision.obligations.resource_types
        assert decision.engine.startswith("opa at http://127.0.0.1:")
        assert decision.revision == engine.revision and len(decision.revision) == 64
    finally:
        engine.close()


def test_no_policy_loaded_answers_empty_and_that_is_a_deny(tmp_path: Path) -> None:
    empty = OpaServer(tmp_path, bundle=None)
    engine = OpaPolicyEngine(empty.url, timeout_s=2.0, health_interval_s=0.2)
    try:
        decision = engine.decide(ALLOWED)
        assert (decision.allow, decision.reasons) == (False, (DEFAULT_REASON,))
        assert engine.healthy(), "an undefined answer is a deny, not an engine failure"
    finally:
        engine.close()
        empty.stop()


def test_unreachable_sidecar_fails_closed() -> None:
    engine = OpaPolicyEngine(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, health_interval_s=0.1)
    try:
        assert engine.healthy() is False
        with pytest.raises(PolicyUnavailable, match="not healthy"):
            engine.decide(ALLOWED)
    finally:
        engine.close()


def test_sidecar_without_its_bundle_is_unhealthy_and_refuses(tmp_path: Path) -> None:
    # A bundle service that never answers: OPA runs, but /health?bundles stays 500.
    config = tmp_path / "opa.yaml"
    config.write_text(
        f"services:\n  nowhere:\n    url: http://127.0.0.1:{free_port()}\n"
        "bundles:\n  his:\n    service: nowhere\n    resource: bundle.tar.gz\n",
        encoding="utf-8",
    )
    server = OpaServer(tmp_path, bundle=None, config=config)
    engine = OpaPolicyEngine(server.url, timeout_s=1.0, health_interval_s=0.1)
    try:
        assert engine.healthy() is False
        with pytest.raises(PolicyUnavailable, match="not healthy"):
            engine.decide(ALLOWED)
    finally:
        engine.close()
        server.stop()


def test_slow_answer_times_out_and_fails_closed(tmp_path: Path) -> None:
    server = opa_with(tmp_path, "allow if count([x | some x in numbers.range(1, input.n)]) > 0\n")
    engine = OpaPolicyEngine(server.url, timeout_s=0.05, health_interval_s=0.1)
    try:
        assert engine.decide({"n": 1}).allow is True
        with pytest.raises(PolicyUnavailable, match="did not answer"):
            engine.decide({"n": 5_000_000})
        assert engine.healthy() is False
        with pytest.raises(PolicyUnavailable):
            engine.decide({"n": 1})  # refused at once while unhealthy
        assert wait_until(engine.healthy), "the monitor brings it back once OPA answers its probe"
        assert engine.decide({"n": 1}).allow is True
    finally:
        engine.close()
        server.stop()


def test_evaluation_error_fails_closed(tmp_path: Path) -> None:
    server = opa_with(tmp_path, "allow := true if input.a\nallow := false if input.b\n")
    engine = OpaPolicyEngine(server.url, timeout_s=2.0, health_interval_s=0.1)
    try:
        with pytest.raises(PolicyUnavailable, match="could not decide"):
            engine.decide({"a": True, "b": True})  # conflicting values: OPA answers 500
    finally:
        engine.close()
        server.stop()


def test_stopping_opa_mid_test_denies_every_request(own_opa: OpaServer) -> None:
    engine = OpaPolicyEngine(own_opa.url, timeout_s=0.5, health_interval_s=0.1)
    try:
        assert engine.decide(ALLOWED).allow is True
        own_opa.stop()
        for _ in range(20):
            with pytest.raises(PolicyUnavailable):
                engine.decide(ALLOWED)
        assert engine.healthy() is False
    finally:
        engine.close()


def test_closed_engine_fails_closed(opa_server: OpaServer) -> None:
    engine = OpaPolicyEngine(opa_server.url, timeout_s=1.0, health_interval_s=0.2)
    engine.close()
    assert engine.healthy() is False
    with pytest.raises(PolicyUnavailable):
        engine.decide(ALLOWED)


@pytest.mark.parametrize("url", ["127.0.0.1:8181", "ftp://opa", "http://"])
def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="WARDFN_OPA_URL"):
        OpaPolicyEngine(url, timeout_s=1.0, health_interval_s=0.2)
