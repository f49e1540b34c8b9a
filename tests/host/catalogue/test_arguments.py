"""Arguments against a function's JSON Schema: the field is named, the value never echoed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from host.catalogue.arguments import ANY_OBJECT, ArgumentsSchema
from host.errors import ConfigurationError, InvalidRequest

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "weight_kg": {"type": "number", "minimum": 0.5, "maximum": 500},
        "sex": {"enum": ["female", "male"]},
        "nested": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]+$"}}},
    },
    "required": ["weight_kg"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "args.weight_kg: is required"),
        ({"weight_kg": "Jane Doe 1970-01-01"}, "args.weight_kg: must match type"),
        ({"weight_kg": 9000}, "args.weight_kg: must satisfy maximum 500"),
        ({"weight_kg": 70, "sex": "Jane Doe"}, "args.sex: must match enum"),
        ({"weight_kg": 70, "nested": {"code": "MRN-Jane"}}, "args.nested.code: must match pattern"),
        ({"weight_kg": 70, "Jane Doe": 1}, "args: has a field the function does not accept"),
    ],
)
def test_bad_arguments_name_the_field_not_the_value(args: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ArgumentsSchema(SCHEMA, "test").check(args)
    assert str(caught.value).startswith(message)
    assert "Jane" not in str(caught.value)


def test_good_arguments_pass() -> None:
    ArgumentsSchema(SCHEMA, "test").check({"weight_kg": 70.5, "sex": "female", "nested": {"code": "123"}})
    ArgumentsSchema(ANY_OBJECT, "test").check({"anything": ["goes"]})


def test_an_invalid_schema_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "args.schema.json"
    path.write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(ConfigurationError, match="not a valid JSON Schema"):
        ArgumentsSchema.from_file(path)
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="cannot read"):
        ArgumentsSchema.from_file(path)


def test_the_shipped_schemas_are_valid() -> None:
    root = Path(__file__).resolve().parents[3]
    for path in [*root.glob("functions/*/*.schema.json"), *root.glob("tests/functions/*/*.schema.json")]:
        ArgumentsSchema.from_file(path)
