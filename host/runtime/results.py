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
# The most one separator (`,` `:` `[` `{`) of an answer costs once parsed, measured with orjson: 72 bytes for
# each `[],` of `[[],[],...]`, 67 for `{"a":0},`, 45 in a FHIR bundle. So 80 per separator, plus up to 4 bytes
# per character of the strings (CPython's widest form), bounds what parsing an answer takes, known before parsing.
PARSED_BYTES_PER_SEPARATOR = 80
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
    if len(body.encode("utf-8")) > limit:
        raise FunctionOutputRejected(f"the function's answer exceeds the {limit} byte output limit")
    if parsed_size_bound(body) > memory_limit:
        # 32 MiB of `[[],[],...]` is 770 MiB of Python lists: refused on its shape, before it is parsed.
        raise FunctionOutputRejected(f"the function's answer could take more than {memory_limit} bytes to parse")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FunctionOutputRejected("the function's answer is not JSON") from exc


def parsed_size_bound(body: str) -> int:
    """At most what `orjson.loads(body)` takes in memory (see PARSED_BYTES_PER_SEPARATOR)."""
    per_char = 1 if body.isascii() else 4
    separators = sum(body.count(mark) for mark in _SEPARATORS)
    return PARSED_BYTES_PER_SEPARATOR * (separators + 1) + per_char * len(body)


def _reason(kind: str, message: str) -> str | None:
    """The listed reason code an `invalid-input` message starts with, or None."""
    found = _REASON.match(message) if kind == "invalid-input" else None
    return found.group(1) if found and found.group(1) in INVALID_INPUT_REASONS else None
