"""med_safety: the WIT adapter over safety.py. Every exception stops at the boundary."""

import json

import safety
from componentize_py_types import Err
from wardfn_guest import error_boundary, json_response, patient_of, query_granted, read_granted
from wardfn_withheld import Withheld
from wit_world import exports
from wit_world.imports.types import Error_NotFound, Request, Response


class Handler(exports.Handler):
    @error_boundary()
    def handle(self, request: Request) -> Response:
        patient_id = patient_of(request, "med_safety")

        def query(resource_type: str, params: safety.Params) -> list[dict]:
            return [json.loads(r) for r in query_granted(patient_id, resource_type, params)]

        try:
            if not [json.loads(r) for r in read_granted(patient_id, "Patient")]:
                raise Err(Error_NotFound("patient not found"))
        except Withheld:
            pass  # the host found the patient before the call; the check needs only their allergies and medications
        return json_response(safety.check(query))
