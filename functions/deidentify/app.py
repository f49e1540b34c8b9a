"""deidentify: the WIT adapter over safe_harbor.py, a page at a time. Every exception stops at the boundary."""

import datetime
import json

import safe_harbor
from componentize_py_types import Err
from wardfn_guest import error_boundary, invalid_input, json_response, not_found, patient_of, query_granted
from wardfn_pages import BadPageToken
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.types import Error_InvalidInput, Request, Response


class Handler(exports.Handler):
    # safe_harbor raises LookupError when the record has no Patient resource.
    @error_boundary(
        {
            LookupError: not_found("patient not found"),
            BadPageToken: invalid_input("the page token is not one this function gave out"),
        }
    )
    def handle(self, request: Request) -> Response:
        patient_id = patient_of(request, "deidentify")
        try:
            args = json.loads(request.args)
            count = int(args.get("_count", safe_harbor.DEFAULT_COUNT))  # checked by the host against args.schema.json
            token = args.get("page")
        except Exception:  # noqa: BLE001
            raise Err(Error_InvalidInput("args must be a JSON object")) from None
        return json_response(
            safe_harbor.deidentify_page(
                patient_id,
                lambda resource_type, params: query_granted(patient_id, resource_type, params),
                records.pseudonym(patient_id),
                datetime.date.today(),
                count,
                token,
            )
        )
