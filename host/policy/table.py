"""The decision table: policy inputs with the answers expected of them, as data.

Each case is `{"name", "input", "allow", "reasons", ["obligations"], ["break_glass"]}`. `reasons`
is the sorted list the host reports (empty when allowed); `obligations`, when given, is compared
as `{"resource_types", "mask", "drop", "imports", "generalise"}` of sorted lists; `break_glass` defaults to false.
Both `wardfn policy test` and the test suite run it, against either engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host.errors import ConfigurationError
from host.policy.document import OBLIGATION_KEYS
from host.types import Decision

DEFAULT_TABLE = Path(__file__).with_name("decision_table.json")


def load_table(path: Path) -> list[dict[str, Any]]:
    """The cases of a decision table file; a ConfigurationError says what is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the decision table {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the decision table {path} is not JSON: {exc}") from exc
    cases = document.get("cases") if isinstance(document, dict) else None
    if not isinstance(cases, list) or not cases:
        raise ConfigurationError(f'the decision table {path} has no "cases" list')
    for index, case in enumerate(cases):
        if not isinstance(case, dict) or not {"name", "input", "allow"} <= set(case):
            raise ConfigurationError(f"case {index} of {path} needs at least name, input and allow")
    return cases


def mismatches(decision: Decision, case: dict[str, Any]) -> list[str]:
    """How `decision` differs from what `case` expects; empty when it is the expected answer."""
    found: list[str] = []
    if decision.allow is not case["allow"]:
        found.append(f"allow: expected {case['allow']}, got {decision.allow}")
    expected_reasons = sorted(case.get("reasons", []))
    if not case["allow"] and list(decision.reasons) != expected_reasons:
        found.append(f"reasons: expected {expected_reasons}, got {list(decision.reasons)}")
    if "obligations" in case:
        expected = {k: sorted(case["obligations"].get(k, [])) for k in OBLIGATION_KEYS}
        if decision.obligations.as_json() != expected:
            found.append(f"obligations: expected {expected}, got {decision.obligations.as_json()}")
    if decision.break_glass is not bool(case.get("break_glass", False)):
        found.append(f"break_glass: expected {bool(case.get('break_glass', False))}, got {decision.break_glass}")
    return found
