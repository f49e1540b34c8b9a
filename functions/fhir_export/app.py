"""fhir_export: the WIT adapter over export.py. Every exception stops at the boundary."""

import json

import export
from componentize_py_types import Err
from wardfn_guest import error_boundary, invalid_input, not_found, patient_of, query_granted
from wardfn_pages import DEFAULT_COUNT, BadPageToken
from wit_world import exports
from wit_world.imports.types import Error_InvalidInput, Request, Response


class Handler(exports.Handler):
    @error_boundary(
        {
            export.PatientNotFound: not_found("patient not found"),
            BadPageToken: invalid_input("the page token is not one this function gave out"),
            ValueError: invalid_input("unsupported bundle type"),
        }
    )
    def handle(self, request: Request) -> Response:
        patient_id = patient_of(request, "fhir_export")
        try:
            args = json.loads(request.args)
            bundle_type = args.get("type", "searchset")
            count = int(args.get("_count", DEFAULT_COUNT))  # the host checked it against args.schema.json
            page = args.get("page")
        except Exception:  # noqa: BLE001
            raise Err(Error_InvalidInput("args must be a JSON object")) from None
        # The Bundle is built from the stored JSON text as it is, never re-serialised.
        return Response(
            export.export(
                lambda resource_type, params: query_granted(patient_id, resource_type, params), bundle_type, count, page
            )
        )
