"""What every wardfn function's WIT adapter shares, built into each component beside the function.

- `error_boundary`: wraps `handle` so that no exception leaves the component as a trap; each
  becomes a case of the WIT `error` variant.
- `read_granted`: a patient's resources of one type; a type the policy decision did not grant
  raises `wardfn_withheld.Withheld`, so that no function can read "not granted" as "none".
- `query_granted`: the same, narrowed by FHIR search parameters the host evaluates (`records.query`),
  so a function reads only what it needs; `Withheld` likewise, and a parameter the host refuses is
  the function's own bug (`internal`).
- `patient_of` and `json_response`: the request's patient, and the answer as compact JSON.

Only adapters import this module (it needs the generated `wit_world` bindings); the functions'
own logic stays plain Python that runs under CPython.
"""

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from componentize_py_types import Err
from wardfn_withheld import Withheld
from wit_world.imports import records
from wit_world.imports.records import AccessError_Denied, QueryError_Denied, QueryError_Invalid
from wit_world.imports.types import Error_Internal, Error_InvalidInput, Error_NotFound, Request, Response

# Errors the function raises on purpose (`raise Err(Error_NotFound(...))`): they pass the boundary as they are.
WIT_ERRORS = (Error_InvalidInput, Error_NotFound, Error_Internal)

ErrorCase = Callable[[Exception], Any]


def not_found(message: str) -> ErrorCase:
    """An `error_boundary` case: the exception becomes `not-found(message)`."""
    return lambda _exc: Error_NotFound(message)


def invalid_input(message: str | None = None) -> ErrorCase:
    """An `error_boundary` case: the exception becomes `invalid-input`, with `message` or the exception's text."""
    return lambda exc: Error_InvalidInput(str(exc) if message is None else message)


def error_boundary(
    cases: Mapping[type[Exception] | tuple[type[Exception], ...], ErrorCase] | None = None,
    *,
    host_failure: str = "records unavailable",
) -> Callable[[Callable[[Any, Request], Response]], Callable[[Any, Request], Response]]:
    """Decorate `handle`: every exception it raises becomes a WIT error, so none escapes as a trap.

    In order: a WIT error the function raised itself passes as it is; an error from one of the
    host's imports becomes `internal(host_failure)`; an exception of a type in `cases` becomes
    what its case makes (the first match, in the mapping's order); anything else becomes
    `internal(<exception type name>)`: a name, never the message, which may hold patient data.
    """
    mapped = dict(cases or {})

    def decorate(handle: Callable[[Any, Request], Response]) -> Callable[[Any, Request], Response]:
        @functools.wraps(handle)
        def guarded(self: Any, request: Request) -> Response:
            try:
                return handle(self, request)
            except Err as err:
                if isinstance(err.value, WIT_ERRORS):
                    raise
                raise Err(Error_Internal(host_failure)) from None
            except Exception as exc:  # noqa: BLE001 - the boundary: nothing escapes as a trap
                for kinds, case in mapped.items():
                    if isinstance(exc, kinds):
                        raise Err(case(exc)) from None
                raise Err(Error_Internal(type(exc).__name__)) from None

        return guarded

    return decorate


def patient_of(request: Request, function: str) -> str:
    """The patient the invocation was authorised for; `invalid-input` when the request names none."""
    if not request.patient_id:
        raise Err(Error_InvalidInput(f"{function} needs a patient"))
    return request.patient_id


def read_granted(patient_id: str, resource_type: str) -> list[str]:
    """The patient's resources of `resource_type` as FHIR JSON strings; `Withheld` when the decision did
    not grant the type. Any other refusal (the store unavailable) is raised as the import's `Err`."""
    try:
        return records.search(patient_id, resource_type)
    except Err as err:
        if isinstance(err.value, AccessError_Denied):
            raise Withheld(resource_type) from None  # not granted: withheld, never "none"
        raise


def query_granted(patient_id: str, resource_type: str, params: Sequence[tuple[str, str]]) -> list[str]:
    """The patient's resources of `resource_type` that match FHIR search `params`, as FHIR JSON strings;
    `Withheld` when the decision did not grant the type. A parameter the host refuses (`invalid`) is a
    bug in the function: `internal`, never an empty answer. Any other refusal (the store unavailable)
    is raised as the import's `Err`."""
    try:
        return records.query(patient_id, resource_type, list(params))
    except Err as err:
        if isinstance(err.value, QueryError_Denied):
            raise Withheld(resource_type) from None  # not granted: withheld, never "none"
        if isinstance(err.value, QueryError_Invalid):
            raise Err(Error_Internal("records query refused")) from None  # the host's text is not passed on
        raise


def json_response(body: Any) -> Response:
    """The answer as compact JSON."""
    return Response(json.dumps(body, separators=(",", ":")))
