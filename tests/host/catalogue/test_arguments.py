"""Arguments against a function's JSON Schema: the field is named, the value never echoed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from host.catalogue.arguments import ANY_OBJECT, ArgumentsSchema
from host.errors import ConfigurationError, InvalidArguments

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
    ("args", "message", "problems"),
    [
        ({}, "args.weight_kg: is required", [("args.weight_kg", "required")]),
        ({"weight_kg": "Jane Doe 1970-01-01"}, "args.weight_kg: must match type", [("args.weight_kg", "type")]),
        ({"weight_kg": 9000}, "args.weight_kg: must satisfy maximum 500", [("args.weight_kg", "maximum")]),
        ({"weight_kg": 70, "sex": "Jane Doe"}, "args.sex: must match enum", [("args.sex", "enum")]),
        (
            {"weight_kg": 70, "nested": {"code": "MRN-Jane"}},
            "args.nested.code: must match pattern",
            [("args.nested.code", "pattern")],
        ),
        (
            {"weight_kg": 70, "Jane Doe": 1},
            "args: has a field the function does not accept",
            [("args", "additionalProperties")],
        ),
        # Every problem is named, in field order, each once.
        ({"sex": "x", "nested": {"code": "y"}}, "args.weight_kg: is required", None),
    ],
)
def test_bad_arguments_name_the_field_and_rule_not_the_value(
    args: dict[str, Any], message: str, problems: list[tuple[str, str]] | None
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        ArgumentsSchema(SCHEMA, "test").check(args)
    assert str(caught.value).startswith(message)
    assert "Jane" not in str(caught.value) and "Jane" not in repr(caught.value.problems)
    if problems is not None:
        assert caught.value.problems == problems
    else:
        assert caught.value.problems == [
            ("args.weight_kg", "required"),
            ("args.nested.code", "pattern"),
            ("args.sex", "enum"),
        ]


def test_a_key_the_schema_does_not_declare_is_never_named() -> None:
    # Extra keys are checked against a schema here: their names come from the caller, not the schema.
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    with pytest.raises(InvalidArguments) as caught:
        ArgumentsSchema(schema, "test").check({"Jane Doe": "x"})
    assert caught.value.problems == [("args.*", "type")]
    assert "Jane" not in str(caught.value)


def test_one_of_several_required_fields_is_named_as_such() -> None:
    schema = {"type": "object", "anyOf": [{"required": ["name"]}, {"required": ["identifier"]}]}
    with pytest.raises(InvalidArguments, match=r"^args: needs one of name, identifier \(anyOf\)$") as caught:
        ArgumentsSchema(schema, "test").check({})
    assert caught.value.problems == [("args", "anyOf")]


def test_good_arguments_pass() -> None:
    ArgumentsSchema(SCHEMA, "test").check({"weight_kg": 70.5, "sex": "female", "nested": {"code": "123"}})
    ArgumentsSchema(ANY_OBJECT, "test").check({"anything": ["goes"]})
    assert ArgumentsSchema(ANY_OBJECT, "test").accepts({}) and not ArgumentsSchema(SCHEMA, "test").accepts({})


def test_the_published_schema_is_a_copy() -> None:
    arguments = ArgumentsSchema(SCHEMA, "test")
    arguments.schema["properties"].clear()
    assert arguments.schema == SCHEMA


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
