"""Test-only: one records.query, its answer or its error case reported as they came from the host."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.types import Request, Response


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        args = json.loads(request.args)
        patient = args.get("patient", request.patient_id or "")
        params = [(str(name), str(value)) for name, value in args.get("params", [])]
        try:
            found = records.query(patient, args.get("type", "Observation"), params)
            answer = {"ok": [json.loads(body) for body in found]}
        except Err as err:
            answer = {"error": type(err.value).__name__, "message": str(err.value.value)}
        return Response(json.dumps(answer))
