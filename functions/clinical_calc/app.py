"""clinical_calc: the WIT adapter over calc.py. Reads no records; every exception stops here."""

import json

import calc
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Error_Internal, Error_InvalidInput, Request, Response


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        if request.patient_id:
            raise Err(Error_InvalidInput("clinical_calc works on no patient"))
        try:
            args = json.loads(request.args)
            if not isinstance(args, dict):
                raise calc.InvalidInput("args must be a JSON object")
            body = calc.calculate(args)
        except (calc.InvalidInput, ValueError) as exc:
            raise Err(Error_InvalidInput(str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing escapes as a trap
            raise Err(Error_Internal(type(exc).__name__)) from None
        return Response(json.dumps(body, separators=(",", ":")))
