"""Test-only search function: reports whether it could read the patient named in its args."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.types import Request, Response


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        args = json.loads(request.args)
        try:
            found = len(records.search(args.get("target", ""), "Patient"))
            attempt = {"succeeded": True, "value": found}
        except Err as err:
            attempt = {"succeeded": False, "error": type(err.value).__name__}
        return Response(json.dumps({"searched": True, "read": attempt}))
