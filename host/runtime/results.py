"""A function's raw answer, checked and parsed: its error case, its shape, its size, its JSON."""

from __future__ import annotations

from typing import Any

import orjson
from wasmtime.component import Variant

from host.errors import FunctionOutputRejected, FunctionReturnedError


def unwrap(result: object) -> str:
    """wasmtime lifts `result<response, error>` as a Record (ok) or a Variant (err)."""
    if isinstance(result, Variant):
        raise FunctionReturnedError(result.tag, str(result.payload)[:500])
    body = getattr(result, "body", None)
    if not isinstance(body, str):
        raise FunctionOutputRejected("the function's answer is not a response record")
    return body


def parse_body(body: str, limit: int) -> Any:
    """The answer as JSON, refused past `limit` bytes."""
    if len(body.encode("utf-8")) > limit:
        raise FunctionOutputRejected(f"the function's answer exceeds the {limit} byte output limit")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FunctionOutputRejected("the function's answer is not JSON") from exc
