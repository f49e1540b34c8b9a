"""clinical_calc: the WIT adapter over calc.py. Reads no records; every exception stops at the boundary."""

import json

import calc
from componentize_py_types import Err
from wardfn_guest import error_boundary, invalid_input, json_response
from wit_world import exports
from wit_world.imports.types import Error_InvalidInput, Request, Response


class Handler(exports.Handler):
    # Arguments that are not JSON, or that calc refuses, are the caller's to fix: their text says how.
    @error_boundary({(calc.InvalidInput, ValueError): invalid_input()})
    def handle(self, request: Request) -> Response:
        if request.patient_id:
            raise Err(Error_InvalidInput("clinical_calc works on no patient"))
        args = json.loads(request.args)
        if not isinstance(args, dict):
            raise calc.InvalidInput("args must be a JSON object")
        return json_response(calc.calculate(args))
