"""Function arguments checked against the JSON Schema a manifest names, before anything runs.

Messages name the field and what the schema expects, never the value sent: it may be
patient data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from host.errors import ConfigurationError, InvalidRequest

# What a function without a schema accepts: an object, nothing more is promised.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class ArgumentsSchema:
    """A compiled schema for one function's `args`."""

    def __init__(self, schema: dict[str, Any], origin: str) -> None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ConfigurationError(f"{origin}: not a valid JSON Schema: {exc.message}") from None
        self._validator = Draft202012Validator(schema)

    @classmethod
    def from_file(cls, path: Path) -> ArgumentsSchema:
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{path}: cannot read the arguments schema: {exc}") from None
        if not isinstance(schema, dict):
            raise ConfigurationError(f"{path}: an arguments schema must be a JSON object")
        return cls(schema, str(path))

    def check(self, args: dict[str, Any]) -> None:
        """InvalidRequest naming the first offending field, if `args` does not match."""
        errors = sorted(self._validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            raise InvalidRequest(_describe(errors[0]))


def _describe(error: ValidationError) -> str:
    field = ".".join(["args", *map(str, error.absolute_path)])
    expected = error.validator_value
    if error.validator == "required" and isinstance(expected, list):
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [name for name in expected if name not in present]
        return f"{field}.{missing[0]}: is required" if missing else f"{field}: misses a required field"
    if error.validator == "additionalProperties":
        return f"{field}: has a field the function does not accept"
    if error.validator in ("type", "enum", "const", "format", "pattern"):
        return f"{field}: must match {error.validator} {json.dumps(expected)[:80]}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"):
        return f"{field}: must satisfy {error.validator} {expected}"
    return f"{field}: does not match the function's arguments schema ({error.validator})"
