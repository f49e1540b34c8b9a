"""Limits that bind before the host pays: wall-clock deadlines, caps on declared lengths, oversized arguments.

Against the real hostile component, whose behaviour each test chooses by argument.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wasmtime import Store
from wasmtime.component import Component

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import cache_key
from host.catalogue.manifest import discover_functions
from host.catalogue.registry import limits_for
from host.config import Settings
from host.errors import FunctionOutputRejected, FunctionTimedOut
from host.runtime.calls import CallResult, FunctionRequest, SandboxLimits
from host.runtime.capture import Bounded
from host.runtime.engine import EpochTicker, create_engine
from host.runtime.imports import CallContext, bound_to
from host.runtime.runner import CallRunner
from host.runtime.sandbox import Sandbox
from host.types import Scope
from tests.conftest import settings_for

pytestmark = pytest.mark.components

PATIENT = "patient-a"
MIB = 1024 * 1024
# A flood to measure copies by; the guest gets room for it (FLOOD_MEMORY) whatever the host's cap.
FLOOD = 32 * MIB
FLOOD_MEMORY = 192 * MIB
# What one invocation may add to the host's resident memory, whatever the function does.
INVOCATION_BUDGET = 384 * MIB
# CPython's own share of the guest's memory: the longest string a guest can hand an import is half
# of what is left, as its string and the copy its lowering makes both live there (measured: 25 MiB
# passes at the 64 MiB cap, 26 traps; 55 passes at 128, 58 traps).
GUEST_BASE = 18 * MIB
# The most empty (name, value) pairs a guest can pass records.query at the 64 MiB cap (470,000 passed,
# 520,000 trapped); wasmtime lifts them all, about 360 bytes each, before the host sees their number.
QUERY_FLOOD = 420_000


def _records(patient_id: str, resource_type: str) -> list[str]:
    return [json.dumps({"resourceType": resource_type, "id": patient_id})]


@dataclasses.dataclass
class Hostile:
    sandbox: Sandbox
    component: Any
    limits: SandboxLimits

    def call(self, args: dict[str, Any], limits: SandboxLimits | None = None) -> CallResult:
        limits = limits or self.limits
        prepared = self.sandbox.prepare(self.component, limits)
        request = FunctionRequest(PATIENT, "TREAT", args)
        # The log flood is read; the directory and the pseudonym would answer, but for the arguments' length.
        scope = Scope(PATIENT, frozenset({"Patient"}), imports=frozenset({"log", "directory", "pseudonym"}))
        return self.sandbox.call(prepared, request, scope, limits)


@pytest.fixture(scope="module")
def hostile(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    # The manifest's own 200 ms: these tests are about the deadline itself.
    settings = settings_for(tmp_path_factory.mktemp("limits") / "unused.db", min_deadline_ms=0)
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    engine = create_engine()
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    ticker.start()
    runner = CallRunner(margin_s=0.25, stranded_per_key=2, stranded_max=4)
    sandbox = Sandbox(
        engine, _records, settings.epoch_tick_ms, runner=runner, pseudonym=lambda _id: "ps", directory=lambda _q, _n: []
    )
    [source] = [source for source in discover_functions(settings.functions_dirs) if source.name == "hostile"]
    artifact = cache.lookup(source.name, cache_key(source, settings.wit_dir))
    assert artifact is not None
    yield Hostile(sandbox, sandbox.load(Path(artifact.cwasm_path)), limits_for(source.manifest, settings))
    runner.close()
    ticker.stop()


def test_a_guest_asleep_in_a_wasi_call_answers_at_its_deadline_not_when_it_wakes(hostile: Hostile) -> None:
    assert hostile.limits.deadline_ms == 200
    started = time.monotonic()
    with pytest.raises(FunctionTimedOut):
        hostile.call({"mode": "sleep", "seconds": 5})
    waited = time.monotonic() - started
    # Deadline plus margin is 0.45 s; the bound is generous for a loaded machine, and still far
    # below the 5 s the sleep would have held the caller for.
    assert waited < 2.5, waited
    assert hostile.sandbox.runner.stranded() == 1
    assert hostile.call({"mode": "ok"}).body == {"ok": True}  # the host goes on meanwhile
    # The abandoned call ends on its own worker when the sleep returns, and lets its store go.
    deadline = time.monotonic() + 30
    while hostile.sandbox.runner.stranded() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hostile.sandbox.runner.stranded() == 0


def test_an_oversized_import_argument_is_refused_before_any_work(hostile: Hostile) -> None:
    body = hostile.call({"mode": "long_id", "size": 4 * MIB}).body
    assert body["search"]["succeeded"] is False
    assert body["search"]["error"] == "AccessError_Denied"
    assert "longer" in body["search"]["detail"]


def test_a_small_flood_is_kept_up_to_its_cap(hostile: Hostile) -> None:
    result = hostile.call({"mode": "stdout_flood", "size": 1 * MIB})
    assert 0 < result.stdio_bytes <= hostile.limits.stdio_bytes
    logged = hostile.call({"mode": "log_flood", "size": 100})
    assert logged.log == ["info: " + "x" * 100]


FLOODS = ["log_flood", "directory_flood", "pseudonym_flood", "stdout_flood", "answer_flood"]


@pytest.mark.parametrize("mode", FLOODS)
def test_a_32_mib_flood_is_refused_without_the_host_keeping_a_copy(hostile: Hostile, mode: str) -> None:
    # Room for the guest to build 32 MiB of JSON on a slow machine: the caps are what is tested.
    limits = dataclasses.replace(hostile.limits, deadline_ms=10_000, memory_bytes=FLOOD_MEMORY)
    hostile.call({"mode": "ok"}, limits)  # the host's own first-call allocations, out of the measure
    control = _peak_growth(lambda: hostile.call({"mode": "flood_control", "size": FLOOD}, limits))
    resident_before = _status("VmRSS")
    result: CallResult | None = None

    def flood() -> None:
        nonlocal result
        try:
            result = hostile.call({"mode": mode, "size": FLOOD}, limits)
        except FunctionOutputRejected:
            result = None

    peak = _peak_growth(flood)
    if mode == "answer_flood":
        assert result is None  # refused: over the 256 KiB output cap
    else:
        assert result is not None
        if mode in ("directory_flood", "pseudonym_flood"):
            attempt = result.body[mode.removesuffix("_flood")]
            assert attempt["error"] == "AccessError_Denied" and "longer" in attempt["detail"]
        else:
            assert result.body == {"ok": True}
        assert sum(len(line) for line in result.log) <= limits.log_bytes
        assert result.stdio_bytes <= limits.stdio_bytes
    # Nothing of it stays: the store is gone and the host kept at most its caps.
    assert _status("VmRSS") - resident_before < 16 * MIB
    # The guest's own copies are in `control`; beyond them the host may pay only what wasmtime's C
    # API copies before the host can see the length: for an import's argument or the answer, the
    # lifted value and its C form (measured: 100 MiB for 50); for stdout, chunks only. Through
    # wasmtime-py's generic conversion an import's argument cost two copies more (directory.search,
    # records.pseudonym: 200 MiB for 50), and before that the host's checks one or two more.
    copies = 0 if mode == "stdout_flood" else 2
    assert peak - control < copies * FLOOD + 16 * MIB, (peak - control) / MIB


def _status(field: str) -> int:
    """A /proc/self/status memory field, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _peak_growth(action: Any) -> int:
    """How far the process's peak resident memory rose above where it stood, while `action` ran."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current VmRSS (Linux 4.0+)
    before = _status("VmHWM")
    action()
    return _status("VmHWM") - before


@pytest.mark.parametrize("mode", ["log_flood", "directory_flood"])
def test_a_string_filling_the_guests_memory_costs_one_invocation_under_its_budget(hostile: Hostile, mode: str) -> None:
    # The worst a guest can do to an import: fill its memory (the manifest's 256 MiB cut to the host's
    # ceiling) with one string and its copy for the import, which wasmtime then copies twice more.
    assert hostile.limits.memory_bytes == Settings().max_memory_bytes
    filling = (hostile.limits.memory_bytes - GUEST_BASE) // 2
    limits = dataclasses.replace(hostile.limits, deadline_ms=10_000)
    hostile.call({"mode": "ok"}, limits)
    result: CallResult | None = None

    def flood() -> None:
        nonlocal result
        result = hostile.call({"mode": mode, "size": filling}, limits)

    peak = _peak_growth(flood)
    assert result is not None  # the guest held it and handed it over: the worst case, not a trap before it
    # The guest's memory and two copies of half of it: measured about 100 MiB at the 64 MiB default
    # (215 at 128 MiB, 465 at the former 256).
    assert 2 * filling < peak < INVOCATION_BUDGET, peak / MIB


def test_an_answer_that_would_parse_far_larger_is_refused_before_it_is_parsed(hostile: Hostile) -> None:
    # 30 MiB of `[[],[],...]` under a 32 MiB output cap: 740 MiB of Python lists had it been parsed.
    limits = dataclasses.replace(hostile.limits, deadline_ms=10_000, output_bytes=32 * MIB, memory_bytes=FLOOD_MEMORY)
    hostile.call({"mode": "ok"}, limits)
    refused: list[FunctionOutputRejected] = []

    def answer() -> None:
        try:
            hostile.call({"mode": "containers", "size": 10 * MIB}, limits)
        except FunctionOutputRejected as exc:
            refused.append(exc)

    peak = _peak_growth(answer)
    assert refused and "to parse" in str(refused[0])
    assert peak < INVOCATION_BUDGET, peak / MIB
    small = hostile.call({"mode": "containers", "size": 1000}, limits)  # a small one is parsed as ever
    assert small.body == [[]] * 1001


def test_a_flood_of_query_parameters_leaves_the_host_no_larger(hostile: Hostile) -> None:
    # 800,000 empty pairs: wasmtime lifts them all (about 300 MiB of small allocations) before the host
    # sees there are more than 32; freed, glibc kept 230 MiB of them resident until the host trimmed.
    limits = dataclasses.replace(hostile.limits, deadline_ms=10_000, memory_bytes=FLOOD_MEMORY)
    hostile.call({"mode": "ok"}, limits)
    resident_before = _status("VmRSS")
    result = hostile.call({"mode": "query_flood", "size": 800_000}, limits)
    assert result.body["query"]["error"] == "QueryError_Invalid"
    assert _status("VmRSS") - resident_before < 64 * MIB, (_status("VmRSS") - resident_before) / MIB


def test_the_largest_query_flood_a_guest_can_send_costs_one_invocation_under_its_budget(hostile: Hostile) -> None:
    # Bounded by the guest's memory, not by the host: at the former 128 MiB cap a guest that filled 40 MiB
    # and sent 800,000 pairs cost the host 392 MiB.
    assert hostile.limits.memory_bytes == Settings().max_memory_bytes == 64 * MIB
    limits = dataclasses.replace(hostile.limits, deadline_ms=10_000)
    hostile.call({"mode": "ok"}, limits)
    result: CallResult | None = None

    def flood() -> None:
        nonlocal result
        result = hostile.call({"mode": "query_flood", "size": QUERY_FLOOD}, limits)

    peak = _peak_growth(flood)
    assert result is not None and result.body["query"]["error"] == "QueryError_Invalid"
    assert 100 * MIB < peak < INVOCATION_BUDGET, peak / MIB  # measured about 175 MiB


# A hand-written guest whose 64 MiB memory is one string for `log.write`, in the encoding it declares:
# Latin-1 bytes of 0xE9 (é) each become two bytes of UTF-8 when wasmtime lifts them, twice over.
RAW_LOG = r"""
(component
  (import "wardfn:patient/log@0.1.0" (instance $log
    (type $l0 (enum "debug" "info" "warn" "error")) (export "level" (type $l (eq $l0)))
    (export "write" (func (param "level" $l) (param "message" string)))))
  (core module $mem (memory (export "mem") 1024))
  (core instance $memi (instantiate $mem))
  (alias core export $memi "mem" (core memory $memory))
  (alias export $log "write" (func $write))
  (core func $lowered (canon lower (func $write) (memory $memory) ENCODING))
  (core module $m
    (import "h" "write" (func $w (param i32 i32 i32)))
    (import "h" "mem" (memory 0))
    (func (export "run") (result i32)
      (memory.fill (i32.const 0) (i32.const BYTE) (i32.const 62914560))
      (call $w (i32.const 1) (i32.const 0) (i32.const 62914560)) (i32.const 0)))
  (core instance $i (instantiate $m
    (with "h" (instance (export "write" (func $lowered)) (export "mem" (memory $memory))))))
  (func (export "run") (result u32) (canon lift (core func $i "run"))))
"""


# `least`: at least one copy of the string, so the measure is known to see it. Whether wasmtime's
# second copy overlaps the first, and whether the guest's pages were resident already, depends on
# what ran before in the process: measured 60 to 180 MiB for UTF-8 (one copy: 60), 300 for Latin-1 (one: 120).
@pytest.mark.parametrize(("encoding", "byte", "least"), [("latin1+utf16", 0xE9, 100 * MIB), ("utf8", 0x78, 50 * MIB)])
def test_a_hand_written_guest_handing_log_its_whole_memory_costs_under_the_budget(
    hostile: Hostile, encoding: str, byte: int, least: int
) -> None:
    # Not bound by CPython's copies: 60 MiB of the 64 is the string (measured 300 MiB as Latin-1,
    # 180 as UTF-8). A flood of records.query parameters is not bound so (docs/functions.md).
    wat = RAW_LOG.replace("ENCODING", f"string-encoding={encoding}").replace("BYTE", str(byte))
    component = Component(hostile.sandbox.engine, wat)
    scope = Scope(PATIENT, frozenset({"Patient"}), imports=frozenset({"log"}))
    context = CallContext(scope=scope, read=_records, log=Bounded(hostile.limits.log_bytes))
    store = Store(hostile.sandbox.engine)
    try:
        store.set_epoch_deadline(1_000_000)
        store.set_limits(memory_size=Settings().max_memory_bytes)
        run = hostile.sandbox.linker.instantiate(store, component).get_func(store, "run")
        assert run is not None
        with bound_to(context):
            peak = _peak_growth(lambda: run(store))
    finally:
        store.close()
    # Counted by its length in UTF-8, never copied into Python.
    assert context.log.dropped == 60 * MIB * (2 if byte > 0x7F else 1)
    assert least < peak < INVOCATION_BUDGET, peak / MIB
