"""open_host: a policy engine given instead of the one the settings name, and every part closed once, in
reverse order, whether the host closes or fails half-way through opening.

Hosts here serve no functions (no functions directory), so they need no built components.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from host.assembly import open_host
from host.attempts import AuditRead
from host.config import Settings, load_settings
from host.errors import ConfigurationError, PolicyDenied
from host.types import Decision, Subject
from tests.conftest import TEST_HOME, checkpoint_file_for


class RecordingPolicy:
    """A policy engine that refuses everything and counts what is asked of it, closing included."""

    revision = "recording"

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []
        self.closed = 0

    def decide(self, input: dict[str, Any]) -> Decision:
        self.inputs.append(input)
        return Decision(id=f"d-{len(self.inputs)}", allow=False, reasons=("recording: no",), revision=self.revision)

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        self.closed += 1


def _settings(database: Path, functions_dirs: list[Path] | None = None) -> Settings:
    return load_settings(
        home=TEST_HOME,
        database=database,
        functions_dirs=functions_dirs or [],
        audit_checkpoint_file=checkpoint_file_for(database),
    )


def _files_open_under(directory: Path) -> list[str]:
    """The files this process holds open below `directory` (the database, its journal, its lock file)."""
    opened = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listed (the listing's own descriptor)
            continue
        if target.startswith(str(directory)):
            opened.append(target)
    return opened


def _host_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.name.startswith("wardfn-")]


def test_the_host_uses_the_policy_engine_it_is_given_and_closes_everything_once(tmp_path: Path) -> None:
    engine = RecordingPolicy()
    threads = set(threading.enumerate())
    host = open_host(_settings(tmp_path / "wardfn.db"), policy=engine)
    try:
        assert host.policy.engine is engine  # behind the decision cache, like any engine
        assert _host_threads(threads) and _files_open_under(tmp_path)
        with pytest.raises(PolicyDenied, match="recording: no"):
            host.service.read_audit(AuditRead("r-1", Subject("co-1", "compliance_officer"), "HCOMPL"))
        assert len(engine.inputs) == 1
        [record] = host.audit.records()
        assert record.event.decision_id == "d-1" and record.event.policy_revision == "recording"
    finally:
        host.close()
    host.close()
    assert engine.closed == 1
    assert _host_threads(threads) == [] and _files_open_under(tmp_path) == []


def _unbuilt_function(directory: Path) -> Path:
    """A valid function source that has never been built: the registry refuses to load it."""
    function = directory / "never_built"
    function.mkdir(parents=True)
    (function / "function.toml").write_text(
        'name = "never_built"\nversion = "0.1.0"\ndescription = "Never built."\naction = "calculate"\n'
        'patient = "none"\n'
    )
    (function / "app.py").write_text("")
    return directory


@pytest.mark.parametrize("failing", ["store", "registry"])
def test_a_part_that_fails_to_open_closes_those_opened_before_it(tmp_path: Path, failing: str) -> None:
    if failing == "store":  # the database's directory cannot be made: the policy engine was open
        (tmp_path / "not-a-directory").write_text("")
        settings, error = _settings(tmp_path / "not-a-directory" / "wardfn.db"), OSError
    else:  # the policy engine, the store, the audit trail and the checkpointer were open
        settings = _settings(tmp_path / "wardfn.db", [_unbuilt_function(tmp_path / "functions")])
        error = ConfigurationError
    engine = RecordingPolicy()
    threads = set(threading.enumerate())
    with pytest.raises(error):
        open_host(settings, policy=engine)
    assert engine.closed == 1
    assert _files_open_under(tmp_path) == [] and _host_threads(threads) == []
    if failing == "registry":
        assert (tmp_path / "wardfn.db").is_file()  # it did get that far
