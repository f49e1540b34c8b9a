"""The decision table, run against both engines: the embedded regopy engine and the real OPA.

Every row must get the same answer from both (allow, reasons, obligations, break_glass). A
difference between them is a finding: fix it in the policy or document it, never hide it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from host.config import PROJECT_ROOT
from host.policy.engine import PolicyEngine, RegoPolicyEngine
from host.policy.opa import OpaPolicyEngine
from host.policy.table import DEFAULT_TABLE, load_table, mismatches
from tests.opa_server import OpaServer

CASES = load_table(DEFAULT_TABLE)
ENGINES = ["regopy", "opa"]


@pytest.fixture(scope="module")
def engines(opa_server: OpaServer) -> Iterator[dict[str, PolicyEngine]]:
    built: dict[str, PolicyEngine] = {
        "regopy": RegoPolicyEngine.from_directory(PROJECT_ROOT / "policies", timeout_s=5.0),
        "opa": OpaPolicyEngine(opa_server.url, timeout_s=5.0, health_interval_s=0.5),
    }
    yield built
    for engine in built.values():
        engine.close()


def test_the_table_is_big_enough_and_covers_both_directions() -> None:
    assert len(CASES) >= 40
    assert sum(c["allow"] for c in CASES) >= 15 and sum(not c["allow"] for c in CASES) >= 15
    assert any(c.get("break_glass") for c in CASES)
    assert len({c["name"] for c in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_decision_table(engines: dict[str, PolicyEngine], engine: str, case: dict[str, Any]) -> None:
    decision = engines[engine].decide(case["input"])
    assert mismatches(decision, case) == []


def test_both_engines_name_the_same_policy_revision(engines: dict[str, PolicyEngine]) -> None:
    engines["opa"].decide({})  # OPA reports the revision of the bundle that answered
    assert engines["regopy"].revision == engines["opa"].revision
    assert len(engines["regopy"].revision) == 64
