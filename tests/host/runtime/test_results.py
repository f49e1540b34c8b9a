"""A function's error case: its reason code passes only when it is on the fixed list, its text never."""

from __future__ import annotations

import pytest
from wasmtime.component import Variant

from host.errors import INVALID_INPUT_REASONS, FunctionReturnedError
from host.runtime.results import unwrap


@pytest.mark.parametrize(
    ("tag", "message", "reason"),
    [
        ("invalid-input", "code:out_of_range weight_kg must be between 1 and 700", "out_of_range"),
        ("invalid-input", "code:missing", "missing"),
        ("invalid-input", "code:too_broad: narrow the search", "too_broad"),
        # Not on the list, not at the start, run into other text, or not an invalid-input: no reason.
        ("invalid-input", "code:jane_doe_was_here", None),
        ("invalid-input", "weight out of range code:out_of_range", None),
        ("invalid-input", "code:out_of_rangeX", None),
        ("invalid-input", "weight_kg must be a number", None),
        ("not-found", "code:missing", None),
        ("internal", "code:out_of_range", None),
    ],
)
def test_a_listed_reason_code_is_kept_and_nothing_else(tag: str, message: str, reason: str | None) -> None:
    with pytest.raises(FunctionReturnedError) as caught:
        unwrap(Variant(tag, message))
    assert caught.value.kind == tag and caught.value.reason == reason
    assert reason is None or reason in INVALID_INPUT_REASONS
