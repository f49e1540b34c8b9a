"""patient_lookup: the WIT adapter over summary.py. Every exception stops at the boundary."""

import summary
from wardfn_guest import error_boundary, json_response, not_found, patient_of, query_granted, read_granted
from wit_world import exports
from wit_world.imports.types import Request, Response


class Handler(exports.Handler):
    @error_boundary({summary.PatientNotFound: not_found("patient not found")})
    def handle(self, request: Request) -> Response:
        patient_id = patient_of(request, "patient_lookup")
        body = summary.build_summary(
            lambda resource_type: summary.parse(read_granted(patient_id, resource_type)),
            lambda resource_type, params: summary.parse(query_granted(patient_id, resource_type, params)),
        )
        return json_response(body)
