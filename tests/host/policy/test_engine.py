"""The embedded Rego engine against the decision table, and its fail-closed behaviour."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.config import PROJECT_ROOT
from host.errors import ConfigurationError, PolicyUnavailable
from host.policy.document import DEFAULT_REASON, build_input, input_hash
from host.policy.engine import RegoPolicyEngine
from host.policy.table import DEFAULT_TABLE, load_table
from host.types import Subject

POLICY_DIR = PROJECT_ROOT / "policies"
CASES = load_table(DEFAULT_TABLE)
SEED_CASES = [c for c in CASES if c["name"].startswith("seed shape")]
HEADER = "package healthcare.his\n\nimport rego.v1\n\n"


@pytest.fixture(scope="module")
def engine() -> Iterator[RegoPolicyEngine]:
    built = RegoPolicyEngine.from_directory(POLICY_DIR, timeout_s=5.0)
    yield built
    built.close()


def make_engine(tmp_path: Path, rego: str, timeout_s: float = 5.0, workers: int = 1) -> RegoPolicyEngine:
    (tmp_path / "policy.rego").write_text(HEADER + rego, encoding="utf-8")
    return RegoPolicyEngine.from_directory(tmp_path, timeout_s=timeout_s, workers=workers)


def test_build_input_has_the_host_shape(engine: RegoPolicyEngine) -> None:
    subject = Subject(id="rn-b", role="nurse", roles=("registration", "nurse"))
    patient = {"id": "p-0001", "care_team": ["rn-b"], "consent_directives": []}
    document = build_input(subject, "read-summary", "TREAT", patient)
    assert document == {
        "subject": {"id": "rn-b", "roles": ["nurse", "registration"]},
        "action": "read-summary",
        "purpose": "TREAT",
        "patient": patient,
        "audit": {"enabled": True},
    }
    assert engine.decide(document).allow is True
    off_team = build_input(subject, "read-summary", "TREAT", {**patient, "care_team": []})
    assert "registration" in subject.all_roles and engine.decide(off_team).allow is True  # as registration
    glass = build_input(Subject("rn-z", "nurse"), "read-summary", "ETREAT", patient, "unconscious")
    assert glass["break_glass"] == {"reason": "unconscious"}
    decided = engine.decide(glass)
    assert decided.allow is True and decided.break_glass is True


@pytest.mark.parametrize("reason", ["C:\\ward\\3", 'he said "now"', "x\\(", "line\nbreak", "\u2028é😀"])
def test_any_text_in_the_input_reaches_the_policy_intact(engine: RegoPolicyEngine, reason: str) -> None:
    # A backslash or a quote in a break-the-glass reason once made the embedded engine fail (503).
    patient = {"id": "p-0001", "care_team": ["rn-b"], "consent_directives": []}
    decided = engine.decide(build_input(Subject("rn-z", "nurse"), "read-summary", "ETREAT", patient, reason))
    assert decided.allow is True and decided.break_glass is True


def test_seed_shape_input_keeps_the_seed_answers(engine: RegoPolicyEngine) -> None:
    seed = {
        "action": "access_patient_data",
        "user": {"id": "u-100", "role": "authorized_medical_staff"},
        "patient": {"id": "p-0001", "consent": True},
        "audit": {"enabled": True},
    }
    assert engine.decide(seed).allow is True
    assert engine.decide({**seed, "patient": {"id": "p-0001", "consent": False}}).allow is False


def test_decision_carries_revision_and_input_hash(engine: RegoPolicyEngine) -> None:
    decision = engine.decide({"a": 1, "b": [1, 2]})
    assert decision.revision == engine.revision
    assert decision.input_hash == input_hash({"b": [1, 2], "a": 1}) != input_hash({"a": 1, "b": [2, 1]})


def test_each_decision_has_a_fresh_id_and_names_the_engine(engine: RegoPolicyEngine) -> None:
    first, second = engine.decide({}), engine.decide({})
    assert first.id != second.id
    assert first.engine.startswith("regopy")


def test_revision_is_the_hash_of_the_policy_sources_without_tests(tmp_path: Path) -> None:
    (tmp_path / "his.rego").write_bytes((POLICY_DIR / "his.rego").read_bytes())
    plain = RegoPolicyEngine.from_directory(tmp_path, timeout_s=5.0)
    (tmp_path / "his_test.rego").write_bytes((POLICY_DIR / "his_test.rego").read_bytes())
    with_tests = RegoPolicyEngine.from_directory(tmp_path, timeout_s=5.0)
    (tmp_path / "extra.rego").write_text(HEADER + "unused := 1\n", encoding="utf-8")
    changed = RegoPolicyEngine.from_directory(tmp_path, timeout_s=5.0)
    try:
        assert len(plain.revision) == 64
        assert plain.revision == with_tests.revision
        assert changed.revision != plain.revision
    finally:
        for built in (plain, with_tests, changed):
            built.close()


# Rules the engine reads, each in a policy of its own: (rego, input, allow, reasons).
UNUSUAL_ANSWERS = {
    "allow undefined (no default) means not allowed": (
        "allow if input.ok == true\n",
        {},
        False,
        (DEFAULT_REASON,),
    ),
    "allow undefined with reasons gives those reasons": (
        'allow if input.ok == true\nreasons contains "not ok" if not input.ok\n',
        {},
        False,
        ("not ok",),
    ),
    "deny wins over allow": (
        'allow := true\ndeny if input.user.role != "doctor"\n',
        {"user": {"role": "porter"}},
        False,
        (DEFAULT_REASON,),
    ),
    "allow without deny": ('allow := true\ndeny if input.user.role != "doctor"\n', {}, True, ()),
    "reasons are sorted and ignored when allowed": (
        'allow if input.ok\nreasons contains "b" if not input.ok\nreasons contains "a" if not input.ok\n',
        {"ok": False},
        False,
        ("a", "b"),
    ),
}


@pytest.mark.parametrize("name", list(UNUSUAL_ANSWERS))
def test_unusual_but_valid_answers(tmp_path: Path, name: str) -> None:
    rego, document, allow, reasons = UNUSUAL_ANSWERS[name]
    built = make_engine(tmp_path, rego)
    try:
        decision = built.decide(document)
    finally:
        built.close()
    assert (decision.allow, decision.reasons) == (allow, reasons)


# Each of these would allow if the engine let an error pass: allow is true unless deny
# (or allow itself) is evaluated, and that evaluation fails. Last: what `{}` gets afterwards.
ENGINE_ERRORS = {
    "type error in deny (strict built-in errors)": (
        "allow := true\ndeny if count(input.n) > 0\n",
        {"n": 5},
        True,
    ),
    "division by zero in deny": ("allow := true\ndeny if 1 / input.n > 0\n", {"n": 0}, True),
    "built-in rego-cpp lacks": (
        'allow := true\ndeny if { input.fetch; http.send({"method": "GET", "url": "http://127.0.0.1:9"}) }\n',
        {"fetch": True},
        True,
    ),
    "unknown function (rego-cpp answers a non-JSON error tree)": (
        "allow := true\ndeny if { input.call; no_such.function(1) }\n",
        {"call": True},
        True,
    ),
    "conflicting values for allow": (
        "allow := true if input.a\nallow := false if input.b\n",
        {"a": True, "b": True},
        False,
    ),
    "allow is not a boolean": ('allow := "yes" if input.a\n', {"a": True}, False),
    "deny is not a boolean": ('allow := true\ndeny := "no" if input.a\n', {"a": True}, True),
    "reasons are not strings": ("allow := true\nreasons contains 7 if input.a\n", {"a": True}, True),
    "input that is not JSON": ("allow := true\n", {"when": object()}, True),
    "an import the host does not have": (
        'allow := true\nobligations := {"imports": ["network"]} if input.a\n',
        {"a": True},
        True,
    ),
    "a pseudonym beside identifying fields": (
        'allow := true\nobligations := {"imports": ["pseudonym"], "drop": ["Patient.name"]} if input.a\n',
        {"a": True},
        True,
    ),
}


@pytest.mark.parametrize("name", list(ENGINE_ERRORS))
def test_engine_errors_fail_closed(tmp_path: Path, name: str) -> None:
    rego, document, allow_after = ENGINE_ERRORS[name]
    built = make_engine(tmp_path, rego)
    try:
        with pytest.raises(PolicyUnavailable):
            built.decide(document)
        # The error does not poison the engine: the next request gets its own answer.
        assert built.decide({}).allow is allow_after
    finally:
        built.close()


BROKEN_DIRECTORIES = {
    "syntax error": {"policy.rego": HEADER + "allow if {{{\n"},
    "empty file": {"policy.rego": ""},
    "wrong package": {"policy.rego": "package other\n\nimport rego.v1\n\nallow := true\n"},
    "only test files": {"his_test.rego": (POLICY_DIR / "his_test.rego").read_text(encoding="utf-8")},
    "no files": {},
    "not UTF-8": {"policy.rego": b"package healthcare.his\n# \xff\xfe\n"},
    "fails on an empty request": {"policy.rego": HEADER + "allow := true\ndeny if count(input) == no_such.fn(1)\n"},
}


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("name", list(BROKEN_DIRECTORIES))
def test_broken_policy_directory_is_refused_at_load(tmp_path: Path, name: str, workers: int) -> None:
    for file_name, content in BROKEN_DIRECTORIES[name].items():
        path = tmp_path / file_name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    with pytest.raises((ConfigurationError, PolicyUnavailable)):
        RegoPolicyEngine.from_directory(tmp_path, timeout_s=5.0, workers=workers)


def test_missing_policy_directory_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="WARDFN_POLICY_DIR"):
        RegoPolicyEngine.from_directory(tmp_path / "nowhere", timeout_s=5.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_slow_decision_times_out_and_fails_closed(tmp_path: Path, workers: int) -> None:
    # About half a second of evaluation in rego-cpp; the timeout is a tenth of that. With a
    # second worker free, the engine still refuses until the runaway evaluation ends.
    built = make_engine(
        tmp_path,
        "allow if count([x | some x in numbers.range(1, input.n)]) > 0\n",
        timeout_s=0.05,
        workers=workers,
    )
    try:
        started = time.monotonic()
        with pytest.raises(PolicyUnavailable, match="took longer"):
            built.decide({"n": 300_000})
        assert time.monotonic() - started < 0.4
        # The runaway evaluation still holds the worker: the engine says so, and fails closed.
        assert built.healthy() is False
        with pytest.raises(PolicyUnavailable):
            built.decide({"n": 1})
        # It recovers once that evaluation ends on its own.
        deadline = time.monotonic() + 10
        while not built.healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert built.decide({"n": 1}).allow is True
    finally:
        built.close()


def test_closed_engine_fails_closed(tmp_path: Path) -> None:
    built = make_engine(tmp_path, "allow := true\n")
    assert built.healthy() is True
    built.close()
    with pytest.raises(PolicyUnavailable):
        built.decide({})
    assert built.healthy() is False


@pytest.mark.parametrize("workers", [1, 3])
def test_concurrent_decisions_are_each_answered_correctly(workers: int) -> None:
    engine = RegoPolicyEngine.from_directory(POLICY_DIR, timeout_s=5.0, workers=workers)
    failures: list[str] = []

    def worker(index: int) -> None:
        # Each thread walks the whole table from its own starting point.
        for case in CASES[index:] + CASES[:index]:
            if engine.decide(case["input"]).allow is not case["allow"]:
                failures.append(f"thread {index}: {case['name']}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        engine.close()
    assert failures == []
