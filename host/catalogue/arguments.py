"""Function arguments checked against the JSON Schema a manifest names, before anything runs.

The schema is published (`GET /v1/functions`, the OpenAPI) as the function's `args_schema`.
A refusal names each offending field and the rule it broke (the schema keyword), never the
value sent: it may be patient data. A field is named only by what the schema itself declares;
a name the caller made up is shown as `*`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from host.errors import ConfigurationError, InvalidArguments

# What a function without a schema accepts: an object, nothing more is promised.
ANY_OBJECT: dict[str, Any] = {"type": "object"}
# Enough for a client to fix its call; the rest would only repeat the same mistakes.
MAX_PROBLEMS = 20


class ArgumentsSchema:
    """A compiled schema for one function's `args`."""

    def __init__(self, schema: dict[str, Any], origin: str) -> None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ConfigurationError(f"{origin}: not a valid JSON Schema: {exc.message}") from None
        self._schema = copy.deepcopy(schema)
        self._validator = Draft202012Validator(schema)
        self._declared = frozenset(_property_names(schema))

    @classmethod
    def from_file(cls, path: Path) -> ArgumentsSchema:
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{path}: cannot read the arguments schema: {exc}") from None
        if not isinstance(schema, dict):
            raise ConfigurationError(f"{path}: an arguments schema must be a JSON object")
        return cls(schema, str(path))

    @property
    def schema(self) -> dict[str, Any]:
        """The published JSON Schema (a copy: callers may embed it where they like)."""
        return copy.deepcopy(self._schema)

    def accepts(self, args: dict[str, Any]) -> bool:
        """True if `args` match the schema."""
        return bool(self._validator.is_valid(args))

    def check(self, args: dict[str, Any]) -> None:
        """InvalidArguments naming each offending field and rule, if `args` does not match."""
        errors = sorted(self._validator.iter_errors(args), key=lambda e: [str(p) for p in e.absolute_path])
        if not errors:
            return
        problems: list[tuple[str, str]] = []
        for error in errors:
            for problem in self._problems(error):
                if problem not in problems:
                    problems.append(problem)
        problems = problems[:MAX_PROBLEMS]
        raise InvalidArguments(_describe(errors[0], self._field(errors[0])), problems)

    def _problems(self, error: ValidationError) -> Iterator[tuple[str, str]]:
        if error.validator == "required" and isinstance(error.validator_value, list):
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if name not in present:
                    yield f"{self._field(error)}.{name}", "required"
            return
        yield self._field(error), str(error.validator)

    def _field(self, error: ValidationError) -> str:
        # Keys the schema declares, and array indexes, are safe to name; any other key came from the
        # caller (it could be a patient's name) and is shown as `*`.
        parts = [str(p) if isinstance(p, int) or p in self._declared else "*" for p in error.absolute_path]
        return ".".join(["args", *parts])


def _describe(error: ValidationError, field: str) -> str:
    expected = error.validator_value
    if error.validator == "required" and isinstance(expected, list):
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [name for name in expected if name not in present]
        return f"{field}.{missing[0]}: is required" if missing else f"{field}: misses a required field"
    if error.validator == "additionalProperties":
        return f"{field}: has a field the function does not accept"
    alternatives = _required_alternatives(error)
    if alternatives:
        return f"{field}: needs one of {', '.join(alternatives)} ({error.validator})"
    if error.validator in ("type", "enum", "const", "format", "pattern"):
        return f"{field}: must match {error.validator} {json.dumps(expected)[:80]}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"):
        return f"{field}: must satisfy {error.validator} {expected}"
    return f"{field}: does not match the function's arguments schema ({error.validator})"


def _required_alternatives(error: ValidationError) -> list[str]:
    """For an anyOf/oneOf whose every branch only failed `required`: the names any one of them asks for."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return []
    if any(sub.validator != "required" for sub in error.context):
        return []
    names = [name for sub in error.context for name in sub.validator_value if isinstance(name, str)]
    return list(dict.fromkeys(names))


def _property_names(schema: Any) -> Iterator[str]:
    """Every property name the schema declares, at any depth."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "patternProperties", "dependentRequired", "dependentSchemas"):
                if isinstance(value, dict):
                    yield from (name for name in value if key != "patternProperties")
            if key == "required" and isinstance(value, list):
                yield from (name for name in value if isinstance(name, str))
            yield from _property_names(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _property_names(item)
