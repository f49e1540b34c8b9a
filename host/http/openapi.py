"""The OpenAPI description: FastAPI's, completed with what only the loaded functions know.

FastAPI describes the routes. This adds one invoke operation per function the host serves,
`POST /v1/functions/<name>/invoke` (operation id `invoke_<name>`), whose request body carries
the function's argument schema (`<name>_args`, the same JSON Schema `GET /v1/functions` lists as
`args_schema`), in place of the generic `{name}` template that routes them all; and the headers
every answer carries. Rebuilt when the served functions change (a SIGHUP reload).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from host.catalogue.registry import LoadedFunction
from host.http.schemas import PATIENT_ID_PATTERN, ErrorResponse

INVOKE_TEMPLATE = "/v1/functions/{name}/invoke"
BREAK_GLASS_REASON_MAX = 1000

# Every status an error answer can have, and when. A route lists those it can answer.
_ERRORS: dict[int, str] = {
    400: "The body is not JSON.",
    401: "Token missing, expired (past the leeway in `GET /v1/policy`), forged, or for another issuer or audience.",
    403: "The policy denied (`reasons` says why), or a break-the-glass or search budget is spent.",
    404: "Unknown function; unknown patient (only after the policy allowed); or the function found nothing.",
    413: "The request body is over the host's limit.",
    422: "Invalid fields or arguments (`fields` names each and the rule it broke; never the value), or the "
    "function rejected its input (`reason`, when it gave one from the documented list).",
    500: "The function failed, or its answer was refused; or an unexpected error (quote the request id).",
    503: "Policy engine, audit trail or store unavailable: nothing was released. Retry shortly.",
    504: "The function passed its deadline.",
}
_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: yours if you sent a safe one.",
        "required": True,
        "schema": {"type": "string"},
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer these error statuses."""
    return {status: {"model": ErrorResponse, "description": _ERRORS[status]} for status in statuses}


def install_openapi(app: FastAPI, functions: Callable[[], Iterable[LoadedFunction]]) -> None:
    """Serve the completed description at `app.openapi()`, rebuilt when `functions()` changes."""
    built: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        served = sorted(functions(), key=lambda f: f.name)
        key = tuple((f.name, f.artifact.cwasm_sha256) for f in served)
        if key not in built:
            built.clear()
            built[key] = describe(app, served)
        return built[key]

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI, functions: list[LoadedFunction]) -> dict[str, Any]:
    """The OpenAPI document of `app` serving `functions`."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    paths: dict[str, Any] = document["paths"]
    template = paths.pop(INVOKE_TEMPLATE)["post"]
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("InvokeBody", None)
    for function in functions:
        schemas[f"{function.name}_args"] = _args_schema(function)
        schemas[f"{function.name}_invoke"] = _invoke_body(function)
        paths[f"/v1/functions/{function.name}/invoke"] = {"post": _invoke_operation(template, function)}
    for path in paths.values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                # An unexpected 500 is answered outside the request context, without the request id.
                if status != "500":
                    response.setdefault("headers", {}).update(copy.deepcopy(_HEADERS))
    return document


def _args_schema(function: LoadedFunction) -> dict[str, Any]:
    schema = function.arguments.schema
    schema.pop("$schema", None)  # the document's own dialect (OpenAPI 3.1: JSON Schema 2020-12) applies
    return schema


def _invoke_body(function: LoadedFunction) -> dict[str, Any]:
    name = function.name
    properties: dict[str, Any] = {}
    required: list[str] = []
    if function.manifest.patient == "required":
        properties["patient_id"] = {
            "type": "string",
            "pattern": PATIENT_ID_PATTERN,
            "description": "The patient (a FHIR id).",
        }
        required.append("patient_id")
    else:
        properties["patient_id"] = {"type": "null", "description": "None: the function works on no patient."}
    properties["purpose"] = {"$ref": "#/components/schemas/Purpose", "default": "TREAT"}
    properties["args"] = {"$ref": f"#/components/schemas/{name}_args"}
    if not function.arguments.accepts({}):
        required.append("args")
    properties["break_glass_reason"] = {
        "type": ["string", "null"],
        "maxLength": BREAK_GLASS_REASON_MAX,
        "description": "Break-the-glass, with purpose ETREAT: why the usual rules are overridden "
        "(sealed in the audit).",
    }
    body: dict[str, Any] = {
        "title": f"{name} invocation",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        body["required"] = required
    return body


def _invoke_operation(template: dict[str, Any], function: LoadedFunction) -> dict[str, Any]:
    operation = copy.deepcopy(template)
    name = function.name
    patient = "one patient" if function.manifest.patient == "required" else "no patient"
    operation["operationId"] = f"invoke_{name}"
    operation["summary"] = f"Invoke {name}"
    operation["description"] = (
        f"{function.manifest.description}\n\nWorks on {patient}; `args` must match `{name}_args`, checked "
        "before the policy or the function runs."
    )
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("name") != "name"]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}_invoke"}}},
    }
    return operation
