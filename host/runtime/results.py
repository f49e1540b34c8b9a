"""A function's raw answer, checked and parsed: its error case, its shape, its size, its JSON."""

from __future__ import annotations

import re
from typing import Any

import orjson
from wasmtime.component import Variant

from host.errors import INVALID_INPUT_REASONS, FunctionOutputRejected, FunctionReturnedError

# `invalid-input("code:out_of_range ...")`: a reason the function marks safe to show. Only the code
# is kept, and only if it is on the fixed list; the text after it stays the function's own.
_REASON = re.compile(r"code:([a-z_]{1,40})(?=[\s:]|$)")
# What parsing an answer can take, bounded before parsing: per separator (`,` `:` `[` `{`, each at most
# one value) and per byte. Fitted to the peak resident memory orjson reached (its parser's working
# memory included) on 4 and 16 MiB of each of many shapes, each in a fresh process: at 16 MiB
# `[[[[[[]]]]]],` took 45 bytes a byte (0.54 separators), `{"a":0},` 31 (0.38), `"😀é",` 15 (0.11), a FHIR
# bundle 5.2 (0.09). The bound is 20 to 40 per cent above the worst, about three times a FHIR bundle's
# cost (tests/host/runtime/test_results.py holds it for each shape).
PARSED_BYTES_PER_SEPARATOR = 96
PARSED_BYTES_PER_BYTE = 8
_SEPARATORS = ",:[{"


def unwrap(result: object) -> str:
    """wasmtime lifts `result<response, error>` as a Record (ok) or a Variant (err)."""
    if isinstance(result, Variant):
        message = str(result.payload)[:500]
        raise FunctionReturnedError(result.tag, message, _reason(result.tag, message))
    body = getattr(result, "body", None)
    if not isinstance(body, str):
        raise FunctionOutputRejected("the function's answer is not a response record")
    return body


def parse_body(body: str, limit: int, memory_limit: int) -> Any:
    """The answer as JSON, refused past `limit` bytes or when parsing it could take more than `memory_limit`."""
    size = len(body) if body.isascii() else len(body.encode("utf-8"))
    if size > limit:
        raise FunctionOutputRejected(f"the function's answer exceeds the {limit} byte output limit")
    if parsed_size_bound(body, size) > memory_limit:
        # 16 MiB of `[[],[],...]` takes 490 MiB to parse: refused on its shape, before it is parsed.
        raise FunctionOutputRejected(f"the function's answer could take more than {memory_limit} bytes to parse")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FunctionOutputRejected("the function's answer is not JSON") from exc


def parsed_size_bound(body: str, size: int) -> int:
    """At most what `orjson.loads(body)` takes in memory, `size` being the body's length in UTF-8."""
    separators = sum(body.count(mark) for mark in _SEPARATORS)
    return PARSED_BYTES_PER_SEPARATOR * (separators + 1) + PARSED_BYTES_PER_BYTE * size


def _reason(kind: str, message: str) -> str | None:
    """The listed reason code an `invalid-input` message starts with, or None."""
    found = _REASON.match(message) if kind == "invalid-input" else None
    return found.group(1) if found and found.group(1) in INVALID_INPUT_REASONS else None
