"""Direct value conversion for `records.pseudonym` and `directory.search`, on host.runtime.values' primitives.

`pseudonym: func(patient-id: string) -> result<string, access-error>` and
`search: func(query: query, limit: u32) -> result<list<match>, access-error>`, `query` a record
of three `option<string>` (name, birth-date, identifier). Through wasmtime-py's generic
conversion each string argument was copied into Python before the host saw its length: a
50 MiB name cost the host four copies (measured 200 MiB), beyond the two wasmtime's C API
makes before any callback runs. Here every length is read first: an argument over its cap
answers `denied` without a copy into Python, as for `records.search`. The arguments stay
wasmtime's (it drops them when the callback returns): read, never freed.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import LinkerInstance, Record, Variant
from wasmtime.component._enter import catch_exceptions

from host.runtime.values import (
    ACCESS_ERROR_CASES,
    TOO_LONG,
    add_import_func,
    encode,
    error_value,
    import_impl,
    lower_result,
    read_string,
    set_name,
    set_string,
    string_size,
)

PseudonymImpl = Callable[[StoreContext, str], "str | Variant"]
# The query as wasmtime-py's generic conversion lifts it (a Record, fields named as in the WIT), and the limit.
DirectoryImpl = Callable[[StoreContext, Record, int], "list[Record] | Variant"]

QUERY_FIELDS = ("name", "birth-date", "identifier")
MATCH_FIELDS = ("id", "name", "birth-date", "gender")
_OPTIONAL_MATCH_FIELDS = frozenset({"birth-date", "gender"})

_Val = ffi.wasmtime_component_val_t
_ValPtr = ctypes.POINTER(ffi.wasmtime_component_val_t)
_Entry = ffi.wasmtime_component_valrecord_entry_t
_LIST = ffi.WASMTIME_COMPONENT_LIST.value
_RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
_U32 = ffi.WASMTIME_COMPONENT_U32.value


def _lower_string_result(result: str | Variant, out: Any) -> None:
    """Write `result<string, access-error>` into `out`."""
    keep: list[object] = []
    if isinstance(result, str):
        data = encode(result)
        payload = _Val()
        set_string(payload, data)
        keep.append(data)
        lower_result(payload, True, out)
    else:
        lower_result(error_value(result, ACCESS_ERROR_CASES, keep), False, out)
    del keep  # only now may the Python memory go


def _pseudonym_callback(
    data: int | None, context: Any, _ty: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    """wasmtime's callback for `records.pseudonym`: measure, lift, run the Python side, lower its answer."""

    def run(store: StoreContext) -> None:
        impl, max_bytes = import_impl(data)
        if nargs != 1 or nresults != 1:
            raise WasmtimeError(f"records.pseudonym: called with {nargs} arguments and {nresults} results")
        if string_size(args[0]) > max_bytes:
            _lower_string_result(Variant("denied", TOO_LONG), results)
            return
        _lower_string_result(impl(store, read_string(args[0])), results)

    result: int = catch_exceptions(context, run)  # type: ignore[assignment]
    return result


def _query(val: Any, max_bytes: int) -> Record | None:
    """The `query` record read in place, or None when a field is longer than `max_bytes` (measured before any copy)."""
    if val.kind != _RECORD or int(val.of.record.size) != len(QUERY_FIELDS):
        raise TypeError("expected the directory query record")
    entries = [val.of.record.data[i] for i in range(len(QUERY_FIELDS))]
    present: list[tuple[str, Any]] = []
    for entry, expected in zip(entries, QUERY_FIELDS, strict=True):
        if ctypes.string_at(entry.name.data, int(entry.name.size)).decode() != expected:
            raise TypeError("expected the directory query record's fields")
        if entry.val.kind != _OPTION:
            raise TypeError(f"expected an option, got value kind {entry.val.kind}")
        option = entry.val.of.option
        if option:
            if string_size(option.contents) > max_bytes:
                return None
            present.append((expected, option.contents))
    query = Record()
    for name in QUERY_FIELDS:
        setattr(query, name, None)
    for name, inner in present:
        setattr(query, name, read_string(inner))
    return query


def _lower_matches(result: list[Record] | Variant, out: Any) -> None:
    """Write `result<list<match>, access-error>` into `out`."""
    keep: list[object] = []
    if not isinstance(result, list):
        lower_result(error_value(result, ACCESS_ERROR_CASES, keep), False, out)
        return
    items = (_Val * len(result))()
    for item, match in zip(items, result, strict=True):
        entries = (_Entry * len(MATCH_FIELDS))()
        for entry, name in zip(entries, MATCH_FIELDS, strict=True):
            name_data = name.encode()
            set_name(entry.name, name_data)
            keep.append(name_data)
            value = getattr(match, name, None)
            if name in _OPTIONAL_MATCH_FIELDS:
                entry.val.kind = _OPTION
                if value is None:
                    entry.val.of.option = None  # NULL: none
                    continue
                inner = _Val()
                entry.val.of.option = ctypes.pointer(inner)
                keep.append(inner)
                target = inner
            else:
                target = entry.val
            data = encode(value)
            set_string(target, data)
            keep.append(data)
        item.kind = _RECORD
        item.of.record.size = len(MATCH_FIELDS)
        item.of.record.data = ctypes.cast(entries, ctypes.POINTER(_Entry))
        keep.append(entries)
    payload = _Val()
    payload.kind = _LIST
    payload.of.list.size = len(result)
    payload.of.list.data = ctypes.cast(items, _ValPtr)
    keep.append(items)
    lower_result(payload, True, out)
    del keep  # only now may the Python memory go


def _directory_callback(
    data: int | None, context: Any, _ty: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    """wasmtime's callback for `directory.search`: measure, lift, run the Python side, lower its answer."""

    def run(store: StoreContext) -> None:
        impl, max_bytes = import_impl(data)
        if nargs != 2 or nresults != 1:
            raise WasmtimeError(f"directory.search: called with {nargs} arguments and {nresults} results")
        query = _query(args[0], max_bytes)
        if query is None:
            _lower_matches(Variant("denied", TOO_LONG), results)
            return
        if args[1].kind != _U32:
            raise TypeError(f"expected a u32 limit, got value kind {args[1].kind}")
        _lower_matches(impl(store, query, int(args[1].of.u32)), results)

    result: int = catch_exceptions(context, run)  # type: ignore[assignment]
    return result


# Module-level so the C function pointers outlive every linker that holds them.
_PSEUDONYM_CALLBACK = ffi.wasmtime_component_func_callback_t(_pseudonym_callback)
_DIRECTORY_CALLBACK = ffi.wasmtime_component_func_callback_t(_directory_callback)


def add_pseudonym_func(instance: LinkerInstance, name: str, impl: PseudonymImpl, max_argument_bytes: int) -> None:
    """Define `name` in `instance` as the WIT's `records.pseudonym`; a longer id answers `denied` uncopied."""
    add_import_func(instance, name, _PSEUDONYM_CALLBACK, impl, max_argument_bytes)


def add_directory_func(instance: LinkerInstance, name: str, impl: DirectoryImpl, max_argument_bytes: int) -> None:
    """Define `name` in `instance` as the WIT's `directory.search`; a longer field answers `denied` uncopied."""
    add_import_func(instance, name, _DIRECTORY_CALLBACK, impl, max_argument_bytes)
