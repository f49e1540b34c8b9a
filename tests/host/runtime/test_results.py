"""A function's answer: its reason code passes only when it is on the fixed list, its text never; what
parsing it would take is bounded before it is parsed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from wasmtime.component import Variant

from host.errors import INVALID_INPUT_REASONS, FunctionOutputRejected, FunctionReturnedError
from host.runtime.results import parse_body, parsed_size_bound, unwrap


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


# Small JSON that parses big, one shape per kind of Python object orjson makes, and a FHIR-like record.
SHAPES = {
    "lists": "[]",
    "one-key dicts": '{"a":0}',
    "lists of one": "[0]",
    "short strings": '"ab"',
    "floats": "1e0",
    "nested": "[[[[[[]]]]]]",
    "escapes": '"\\ud83d\\ude00"',
    "wide characters": '"\U0001f600\u00e9"',
    "wide keys": '{"\u00e9":0}',
    "resources": json.dumps({"resourceType": "Observation", "id": "o-1", "status": "final", "value": {"v": 7.2}}),
}
# Run in a fresh process, so that memory an earlier parse freed does not hide this one's peak.
PARSE = """
import orjson, sys
unit = sys.argv[1]
body = "[" + ",".join([unit] * (4 * 1024 * 1024 // len(unit.encode()))) + "]"
def hwm():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = hwm()
parsed = orjson.loads(body)
print(hwm() - before)
"""


@pytest.mark.parametrize("unit", SHAPES.values(), ids=SHAPES.keys())
def test_the_bound_on_a_parsed_answer_holds_for_every_shape(unit: str) -> None:
    body = "[" + ",".join([unit] * (4 * 1024 * 1024 // len(unit.encode()))) + "]"
    done = subprocess.run([sys.executable, "-c", PARSE, unit], capture_output=True, text=True, check=True)
    peak = int(done.stdout)
    assert peak > len(body)  # the parse was measured
    assert peak <= parsed_size_bound(body, len(body.encode()))


def test_an_answer_that_would_parse_past_its_memory_limit_is_refused_unparsed() -> None:
    body = "[" + ",".join(["[]"] * 100_000) + "]"  # 300 KB, 6.4 MB of lists
    with pytest.raises(FunctionOutputRejected, match="to parse"):
        parse_body(body, limit=1 << 20, memory_limit=16 << 20)
    assert len(parse_body(body, limit=1 << 20, memory_limit=64 << 20)) == 100_000
