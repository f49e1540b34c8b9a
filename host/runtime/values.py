"""Direct value conversion for the hottest host/guest crossings, and for those a guest can make huge.

wasmtime-py converts component values generically: every call rebuilds the function's type
through ctypes (`FuncType.params`, `RecordType.fields`, `VariantLikeType._tagged` ...) and
walks it, about a quarter of a prepared call. The two crossings every patient function makes,
`records.search` (an import) and `handler.handle` (the export), have shapes fixed by the WIT,
so this module converts them directly instead. `log.write` is converted here too, for another
reason: the generic conversion copies the message into Python before the host sees its length
(the other imports that take strings, on the same primitives: `query_values`, `lookup_values`).

Every string read here is measured by its declared length before it is copied: an argument,
a message or an answer over its cap is refused without a copy into Python (wasmtime itself
has lifted it out of linear memory by then; that copy is the one the host cannot avoid).

Ownership, which is what makes this safe, follows from wasmtime's C API:

* Values the host *gives* wasmtime are built in Python-owned ctypes memory and only ever
  borrowed by wasmtime: `wasmtime_component_func_call` reads its arguments (wasmtime-py frees
  its own copies after the call, so wasmtime never keeps them), and `wasmtime_component_val_clone`
  deep-copies a value into memory wasmtime allocates and later frees itself. So nothing built
  here is ever freed by wasmtime, and nothing wasmtime allocated is ever freed here except
  through wasmtime's own `wasmtime_component_val_delete`.
* Values wasmtime *gives* the host: an import's arguments stay wasmtime's (it drops them when
  the callback returns), so they are only read; an export's result is written into storage
  owned here and released once, whole, with `wasmtime_component_val_delete`.
* Every value read is checked against the expected kind before its union member is read, so a
  shape other than the expected one raises (a trap of that call), never misreads memory.

Errors raised by the Python side of an import go through wasmtime-py's own `catch_exceptions`,
and calls into the guest through its `enter_wasm`, so failures surface exactly as they do on
wasmtime-py's generic path.
"""

from __future__ import annotations

import ctypes
import itertools
import weakref
from collections.abc import Callable
from typing import Any

from wasmtime import Store, StoreContext, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import (
    Component,
    Func,
    FuncType,
    LinkerInstance,
    OptionType,
    Record,
    RecordType,
    ResultType,
    String,
    Variant,
    VariantType,
)
from wasmtime.component._enter import catch_exceptions, enter_wasm

from host.errors import FunctionOutputRejected

SearchImpl = Callable[[StoreContext, str, str], "list[str] | Variant"]
# (level, the message's declared length in bytes, a reader that copies it): the host decides
# from the length whether the message is worth copying at all.
LogImpl = Callable[[str, int, Callable[[], str]], None]

_Val = ffi.wasmtime_component_val_t
_ValPtr = ctypes.POINTER(ffi.wasmtime_component_val_t)
_BytePtr = ctypes.POINTER(ctypes.c_ubyte)
_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_LIST = ffi.WASMTIME_COMPONENT_LIST.value
_RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
_VARIANT = ffi.WASMTIME_COMPONENT_VARIANT.value
_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
_ENUM = ffi.WASMTIME_COMPONENT_ENUM.value

# `access-error`'s cases, all with a string payload.
ACCESS_ERROR_CASES = frozenset({"denied", "unavailable"})
REQUEST_FIELDS = ("patient-id", "purpose", "args")


# --- building values in Python-owned memory -------------------------------------------------


def set_string(target: Any, data: bytes) -> None:
    """`target` (a val_t) becomes a string pointing into `data`, which the caller keeps alive."""
    target.kind = _STRING
    target.of.string.size = len(data)
    # Points into the bytes object itself: wasmtime only ever copies from it.
    target.of.string.data = ctypes.cast(ctypes.c_char_p(data), _BytePtr)


def set_name(target: Any, data: bytes) -> None:
    """A `wasm_name_t` (record field name, variant case) pointing into `data`."""
    target.size = len(data)
    target.data = ctypes.cast(ctypes.c_char_p(data), _BytePtr)


# --- reading values wasmtime owns -------------------------------------------------------------


def _read_bytes(vec: Any) -> bytes:
    size = int(vec.size)
    return b"" if size == 0 else ctypes.string_at(vec.data, size)


def read_string(val: Any) -> str:
    if val.kind != _STRING:
        raise TypeError(f"expected a string, got value kind {val.kind}")
    return _read_bytes(val.of.string).decode("utf-8")


def string_size(val: Any) -> int:
    """A string value's length in bytes, read without copying it."""
    if val.kind != _STRING:
        raise TypeError(f"expected a string, got value kind {val.kind}")
    return int(val.of.string.size)


def _deref(pointer: Any, what: str) -> Any:
    """The val_t a boxed payload pointer points to; NULL (no payload) where one is required raises."""
    if not pointer:
        raise TypeError(f"{what} has no payload")
    return pointer.contents


# --- the imports converted directly --------------------------------------------------------------

# Each import defined here: (its Python side, the longest string argument it reads), by the key
# wasmtime hands back to the callback.
_IMPLS: dict[int, tuple[Any, Any]] = {}
_ids = itertools.count(1)  # 0 would reach the callback as a NULL `data`, i.e. None
TOO_LONG = "an argument is longer than this import accepts"


def lower_list_result(result: list[str] | Variant, out: Any, cases: frozenset[str] = ACCESS_ERROR_CASES) -> None:
    """Write `result<list<string>, E>` into `out` (wasmtime's result slot), E a variant of string cases."""
    keep: list[object] = []  # everything the value points into, alive until the copy is made
    if isinstance(result, list):
        encoded = [encode(item) for item in result]
        items = (_Val * len(encoded))()
        for slot, data in zip(items, encoded, strict=True):
            set_string(slot, data)
        payload = _Val()
        payload.kind = _LIST
        payload.of.list.size = len(encoded)
        payload.of.list.data = ctypes.cast(items, _ValPtr)
        keep += [encoded, items]
        lower_result(payload, True, out)
    else:
        lower_result(error_value(result, cases, keep), False, out)
    del keep  # only now may the Python memory go


def error_value(result: object, cases: frozenset[str], keep: list[object]) -> Any:
    """The val_t of an error variant `result` (one of `cases`, a string payload); what it points into goes in `keep`."""
    if not isinstance(result, Variant):
        raise ValueError("value not valid for this variant")  # wasmtime-py's words for the same
    if result.tag not in cases:
        raise ValueError(f"the error variant has no case {result.tag!r}")
    tag, message = result.tag.encode(), encode(result.payload)
    inner, payload = _Val(), _Val()
    set_string(inner, message)
    payload.kind = _VARIANT
    set_name(payload.of.variant.discriminant, tag)
    payload.of.variant.val = ctypes.pointer(inner)
    keep += [tag, message, inner]
    return payload


def lower_result(payload: Any, is_ok: bool, out: Any) -> None:
    """Write `result` (ok or err with `payload`, a val_t in Python memory) into `out`, wasmtime's result slot.

    wasmtime deep-copies the value into `out` in one call: what lands there is wholly
    wasmtime-allocated, and wasmtime frees it after reading. `out` holds `bool false` until then,
    so an exception before the copy leaves nothing to free. The caller keeps `payload`'s memory alive.
    """
    top = _Val()
    top.kind = _RESULT
    top.of.result.is_ok = is_ok
    top.of.result.val = ctypes.pointer(payload)
    ffi.wasmtime_component_val_clone(ctypes.byref(top), out)


def encode(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError("expected string type")
    return value.encode("utf-8")  # a lone surrogate raises here, before anything reaches wasmtime


def _search_callback(
    data: int | None, context: Any, _ty: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    """wasmtime's callback for `records.search`: lift two strings, run the Python side, lower its answer."""

    def run(store: StoreContext) -> None:
        impl, max_bytes = _IMPLS[data or 0]
        if nargs != 2 or nresults != 1:
            raise WasmtimeError(f"records.search: called with {nargs} arguments and {nresults} results")
        # Measured before anything is copied: an oversized id costs the host no work.
        if string_size(args[0]) > max_bytes or string_size(args[1]) > max_bytes:
            lower_list_result(Variant("denied", TOO_LONG), results)
            return
        # The arguments stay wasmtime's (it drops them after this returns): read, never freed.
        patient_id = read_string(args[0])
        resource_type = read_string(args[1])
        lower_list_result(impl(store, patient_id, resource_type), results)

    # wasmtime-py's own wrapper: an exception becomes a wasmtime error returned to wasmtime (a trap
    # of this call), and the original exception is raised again where the guest was entered.
    result: int = catch_exceptions(context, run)  # type: ignore[assignment]
    return result


def _log_callback(data: int | None, context: Any, _ty: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
    """wasmtime's callback for `log.write: func(level: level, message: string)`."""

    def run(_store: StoreContext) -> None:
        impl, _max_bytes = _IMPLS[data or 0]
        if nargs != 2 or nresults != 0:
            raise WasmtimeError(f"log.write: called with {nargs} arguments and {nresults} results")
        level = args[0]
        if level.kind != _ENUM:
            raise TypeError(f"expected the level enum, got value kind {level.kind}")
        message = args[1]
        impl(_read_bytes(level.of.enumeration).decode("utf-8"), string_size(message), lambda: read_string(message))

    result: int = catch_exceptions(context, run)  # type: ignore[assignment]
    return result


def import_impl(data: int | None) -> tuple[Any, Any]:
    """(the Python side, its limits) of an import defined with `add_import_func`, by the key wasmtime passes."""
    return _IMPLS[data or 0]


def _finalize_import(data: int | None) -> None:
    # Runs when wasmtime drops the linker, possibly at interpreter exit after this module's
    # globals are gone: wasmtime-py's own finalizer guards the same way.
    if _IMPLS:
        _IMPLS.pop(data or 0, None)


# Module-level so the C function pointers outlive every linker that holds them.
_SEARCH_CALLBACK = ffi.wasmtime_component_func_callback_t(_search_callback)
_LOG_CALLBACK = ffi.wasmtime_component_func_callback_t(_log_callback)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize_import)


def add_import_func(instance: LinkerInstance, name: str, callback: Any, impl: Any, max_bytes: Any) -> None:
    """Define `name` in `instance` with a raw wasmtime `callback` that finds `impl` and `max_bytes` (its
    limits) through `import_impl`; the callback must outlive the linker (keep it at module level)."""
    if instance.locked:
        raise WasmtimeError("cannot use linker instance while it's in use by other instances")
    key = next(_ids)
    _IMPLS[key] = (impl, max_bytes)
    name_bytes = name.encode("utf-8")
    err = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), ctypes.create_string_buffer(name_bytes), len(name_bytes), callback, key, _FINALIZER
    )
    if err:
        _IMPLS.pop(key, None)
        raise WasmtimeError._from_ptr(err)


def add_search_func(instance: LinkerInstance, name: str, impl: SearchImpl, max_argument_bytes: int) -> None:
    """Define `name` in `instance` as `search: func(string, string) -> result<list<string>, access-error>`.

    Like `LinkerInstance.add_func`, but converting directly for that one shape. An argument longer
    than `max_argument_bytes` answers `denied` before it is copied or `impl` runs. wasmtime checks
    the component's import against what the callback answers: a value of another shape is a trap.
    """
    add_import_func(instance, name, _SEARCH_CALLBACK, impl, max_argument_bytes)


def add_log_func(instance: LinkerInstance, name: str, impl: LogImpl) -> None:
    """Define `name` in `instance` as `write: func(level: level, message: string)`, converted directly:
    `impl` learns the message's length first and copies it only if it wants it."""
    add_import_func(instance, name, _LOG_CALLBACK, impl, 0)


# --- the handler.handle export ----------------------------------------------------------------

# Whether a component's `handle` has exactly the WIT's shape, decided once per component.
_KNOWN_SHAPE: weakref.WeakKeyDictionary[Component, bool] = weakref.WeakKeyDictionary()


def handle_has_known_shape(component: Component, store: Store, handle: Func) -> bool:
    """`handle: func(request: request) -> result<response, error>`, as the WIT says? Once per component.

    A component built against another WIT (or a hostile one) keeps wasmtime-py's generic path.
    """
    known = _KNOWN_SHAPE.get(component)
    if known is None:
        known = _KNOWN_SHAPE[component] = _is_handle_shape(handle.type(store))
    return known


def _is_string(ty: object) -> bool:
    return isinstance(ty, String)


def _is_handle_shape(fty: FuncType) -> bool:
    params = fty.params
    if len(params) != 1 or not isinstance(params[0][1], RecordType):
        return False
    fields = params[0][1].fields
    if tuple(name for name, _ in fields) != REQUEST_FIELDS:
        return False
    patient, purpose, args = (ty for _, ty in fields)
    if not (isinstance(patient, OptionType) and _is_string(patient.payload)):
        return False
    if not (_is_string(purpose) and _is_string(args)):
        return False
    result = fty.result
    if not isinstance(result, ResultType):
        return False
    ok, err = result.ok, result.err
    if not isinstance(ok, RecordType) or [(name, _is_string(ty)) for name, ty in ok.fields] != [("body", True)]:
        return False
    if not isinstance(err, VariantType):
        return False
    return all(ty is not None and _is_string(ty) for _, ty in err.cases)


def call_handle(
    store: Store, handle: Func, patient_id: str | None, purpose: str, args: str, max_body_bytes: int
) -> Record | Variant:
    """Call `handle` (checked by `handle_has_known_shape`) and lift its answer as wasmtime-py would:
    a Record with `body` for ok, a Variant(case, message) for err. A body longer than
    `max_body_bytes` is refused (FunctionOutputRejected) before it is copied into Python."""
    keep: list[object] = []  # everything the argument points into, alive until the call returns
    entries = (ffi.wasmtime_component_valrecord_entry_t * 3)()
    for entry, name in zip(entries, REQUEST_FIELDS, strict=True):
        data = name.encode()
        set_name(entry.name, data)
        keep.append(data)
    if patient_id is None:
        entries[0].val.kind = _OPTION
        entries[0].val.of.option = None  # NULL: none
    else:
        inner = _Val()
        data = encode(patient_id)
        set_string(inner, data)
        entries[0].val.kind = _OPTION
        entries[0].val.of.option = ctypes.pointer(inner)
        keep += [inner, data]
    for entry, text in ((entries[1], purpose), (entries[2], args)):
        data = encode(text)
        set_string(entry.val, data)
        keep.append(data)
    params = (_Val * 1)()
    params[0].kind = _RECORD
    params[0].of.record.size = 3
    params[0].of.record.data = ctypes.cast(entries, ctypes.POINTER(ffi.wasmtime_component_valrecord_entry_t))
    # Storage owned here, zeroed (`bool false`): wasmtime writes a value it allocated into it.
    answer = _Val()

    def run() -> Any:
        # wasmtime reads the arguments and never frees them: they stay Python memory.
        return ffi.wasmtime_component_func_call(
            ctypes.byref(handle._func), store._context(), params, 1, ctypes.byref(answer), 1
        )

    try:
        enter_wasm(run)
        return _lift_answer(answer, max_body_bytes)
    finally:
        # Frees what wasmtime allocated inside `answer` (nothing after a failed call), not `answer`.
        ffi.wasmtime_component_val_delete(ctypes.byref(answer))
        del keep


def _lift_answer(answer: Any, max_body_bytes: int) -> Record | Variant:
    """`result<response, error>` read in place; freeing it is the caller's `val_delete`."""
    if answer.kind != _RESULT:
        raise TypeError(f"expected a result, got value kind {answer.kind}")
    if answer.of.result.is_ok:
        response = _deref(answer.of.result.val, "ok")
        if response.kind != _RECORD or response.of.record.size != 1:
            raise TypeError("expected the response record")
        field = response.of.record.data[0]
        if _read_bytes(field.name) != b"body":
            raise TypeError("expected the response record's body")
        if string_size(field.val) > max_body_bytes:
            raise FunctionOutputRejected(f"the function's answer exceeds the {max_body_bytes} byte output limit")
        record = Record()
        record.body = read_string(field.val)  # type: ignore[attr-defined]
        return record
    error = _deref(answer.of.result.val, "err")
    if error.kind != _VARIANT:
        raise TypeError(f"expected the error variant, got value kind {error.kind}")
    tag = _read_bytes(error.of.variant.discriminant).decode("utf-8")
    payload = error.of.variant.val
    if payload and string_size(payload.contents) > max_body_bytes:
        raise FunctionOutputRejected(f"the function's error message exceeds the {max_body_bytes} byte output limit")
    return Variant(tag, read_string(payload.contents) if payload else None)
