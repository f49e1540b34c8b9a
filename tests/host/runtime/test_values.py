"""The direct conversions of host.wasm_values against components of the wrong shape.

Hand-written components (component-model text, compiled by wasmtime) import `records.search`
or export `handle` with signatures other than the WIT's: each call must fail on its own, as a
trap or a rejected answer, and the process must go on serving."""

from __future__ import annotations

import pytest
from wasmtime import Store, WasmtimeError
from wasmtime.component import Component

from host.errors import FunctionOutputRejected
from host.runtime.calls import FunctionRequest, SandboxLimits
from host.runtime.engine import create_engine
from host.runtime.sandbox import Sandbox
from host.types import Scope

LIMITS = SandboxLimits(deadline_ms=2000, memory_bytes=64 << 20, output_bytes=1 << 20, stdio_bytes=4096, log_bytes=4096)

# handle: func(x: u32) -> u32, exported where the WIT's handler belongs.
U32_HANDLE = r"""
(component
  (core module $m (func (export "handle") (param i32) (result i32) local.get 0))
  (core instance $i (instantiate $m))
  (func $h (param "x" u32) (result u32) (canon lift (core func $i "handle")))
  (instance $hi (export "handle" (func $h)))
  (export "wardfn:patient/handler@0.1.0" (instance $hi)))
"""


def _importer(params: str, core_params: str, call_args: str) -> str:
    """A component whose `run` calls a `records.search` import declared with `params -> u32`."""
    return rf"""
(component
  (import "wardfn:patient/records@0.1.0" (instance $r (export "search" (func {params} (result u32)))))
  (core module $mem (memory (export "mem") 1) (data (i32.const 0) "p1Patient"))
  (core instance $memi (instantiate $mem))
  (alias core export $memi "mem" (core memory $memory))
  (alias export $r "search" (func $sf))
  (core func $search (canon lower (func $sf) (memory $memory)))
  (core module $m
    (import "h" "search" (func $s (param {core_params}) (result i32)))
    (func (export "run") (result i32) (call $s {call_args})))
  (core instance $i (instantiate $m (with "h" (instance (export "search" (func $search))))))
  (func (export "run") (result u32) (canon lift (core func $i "run"))))
"""


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(create_engine(), lambda patient, kind: ["{}"], tick_ms=10)


def test_a_handle_of_another_shape_keeps_the_generic_path(sandbox: Sandbox) -> None:
    prepared = sandbox.prepare(Component(sandbox.engine, U32_HANDLE), LIMITS)
    assert not prepared.direct
    with pytest.raises(FunctionOutputRejected):
        sandbox.call(prepared, FunctionRequest("p1", "TREAT", {}), Scope("p1", frozenset({"Patient"})), LIMITS)


@pytest.mark.parametrize(
    ("params", "core_params", "call_args"),
    [
        # Two strings, but the import promises a u32 back: wasmtime rejects the answer.
        (
            '(param "patient-id" string) (param "resource-type" string)',
            "i32 i32 i32 i32",
            "(i32.const 0) (i32.const 2) (i32.const 2) (i32.const 7)",
        ),
        # Two arguments that are not strings.
        ('(param "a" u32) (param "b" u32)', "i32 i32", "(i32.const 1) (i32.const 2)"),
        # One argument.
        ('(param "a" string)', "i32 i32", "(i32.const 0) (i32.const 2)"),
    ],
)
def test_a_search_import_of_another_shape_traps_that_call_only(
    sandbox: Sandbox, params: str, core_params: str, call_args: str
) -> None:
    component = Component(sandbox.engine, _importer(params, core_params, call_args))
    for _ in range(3):
        store = Store(sandbox.engine)
        store.set_epoch_deadline(1_000_000)
        try:
            run = sandbox.linker.instantiate(store, component).get_func(store, "run")
            assert run is not None
            # A Python error on the host side is raised again here, as wasmtime-py does.
            with pytest.raises((WasmtimeError, TypeError)):
                run(store)
        finally:
            store.close()
