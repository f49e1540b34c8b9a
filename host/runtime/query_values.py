"""Direct value conversion for `records.query`, on host.runtime.values' primitives and ownership rules.

`query: func(patient-id: string, resource-type: string, params: list<tuple<string, string>>)
-> result<list<string>, query-error>`. Every length is read before anything is copied: an id or
a type over its cap answers `denied` as for `records.search`, and more parameters than allowed,
or a name or value over its cap, answers `invalid`, both without a copy into Python. The
arguments stay wasmtime's (it drops them when the callback returns): read, never freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import LinkerInstance, Variant
from wasmtime.component._enter import catch_exceptions

from host.runtime.values import TOO_LONG, add_import_func, import_impl, lower_list_result, read_string, string_size

# `query-error`'s cases, all with a string payload.
QUERY_ERROR_CASES = frozenset({"denied", "unavailable", "invalid"})
QueryImpl = Callable[[StoreContext, str, str, list[tuple[str, str]]], "list[str] | Variant"]

_LIST = ffi.WASMTIME_COMPONENT_LIST.value
# More parameters than this in one call is a flood worth trimming the heap after (see `trim_after_flood`).
FLOOD_PARAMS = 10_000
_TUPLE = ffi.WASMTIME_COMPONENT_TUPLE.value

# wasmtime lifts a parameter list before the host sees its length (up to its 128 MiB of hostcall fuel,
# which the C API cannot lower): 800,000 empty pairs cost about 300 MiB of small allocations, and
# glibc kept 230 MiB of them resident after they were freed. Such a flood asks for a trim once the
# call is over (`trim_after_flood`), which gave all but 40 MiB back.
_FLOODED = threading.Event()
_LIBC = ctypes.util.find_library("c")
_MALLOC_TRIM = getattr(ctypes.CDLL(_LIBC), "malloc_trim", None) if _LIBC else None


def trim_after_flood() -> None:
    """If a call since the last trim sent a parameter flood, give the C heap's free pages back (glibc)."""
    if _FLOODED.is_set():
        _FLOODED.clear()
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)


@dataclass(frozen=True)
class QueryLimits:
    """The longest id or type (bytes), the most parameters, the longest parameter name or value (bytes)."""

    argument_bytes: int
    params: int
    param_bytes: int


def _pairs(val: Any, limits: QueryLimits) -> list[tuple[str, str]] | str:
    """`list<tuple<string, string>>` read in place, or why it is refused (measured before any copy)."""
    if val.kind != _LIST:
        raise TypeError(f"expected a list, got value kind {val.kind}")
    size = int(val.of.list.size)
    if size > limits.params:
        if size > FLOOD_PARAMS:
            _FLOODED.set()
        return f"at most {limits.params} search parameters"
    items = [val.of.list.data[i] for i in range(size)]
    for item in items:
        if item.kind != _TUPLE or int(item.of.tuple.size) != 2:
            raise TypeError("expected a (name, value) pair of strings")
        if string_size(item.of.tuple.data[0]) > limits.param_bytes or string_size(item.of.tuple.data[1]) > (
            limits.param_bytes
        ):
            return f"a search parameter's name or value is longer than {limits.param_bytes} bytes"
    return [(read_string(item.of.tuple.data[0]), read_string(item.of.tuple.data[1])) for item in items]


def _query_callback(
    data: int | None, context: Any, _ty: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    """wasmtime's callback for `records.query`: measure, lift, run the Python side, lower its answer."""

    def run(store: StoreContext) -> None:
        impl, limits = import_impl(data)
        if nargs != 3 or nresults != 1:
            raise WasmtimeError(f"records.query: called with {nargs} arguments and {nresults} results")
        if string_size(args[0]) > limits.argument_bytes or string_size(args[1]) > limits.argument_bytes:
            lower_list_result(Variant("denied", TOO_LONG), results, QUERY_ERROR_CASES)
            return
        params = _pairs(args[2], limits)
        if isinstance(params, str):
            lower_list_result(Variant("invalid", params), results, QUERY_ERROR_CASES)
            return
        answer = impl(store, read_string(args[0]), read_string(args[1]), params)
        lower_list_result(answer, results, QUERY_ERROR_CASES)

    result: int = catch_exceptions(context, run)  # type: ignore[assignment]
    return result


# Module-level so the C function pointer outlives every linker that holds it.
_QUERY_CALLBACK = ffi.wasmtime_component_func_callback_t(_query_callback)


def add_query_func(instance: LinkerInstance, name: str, impl: QueryImpl, limits: QueryLimits) -> None:
    """Define `name` in `instance` as the WIT's `records.query`, converted directly within `limits`."""
    add_import_func(instance, name, _QUERY_CALLBACK, impl, limits)
