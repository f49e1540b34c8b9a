"""deidentify: the WIT adapter over safe_harbor.py. Every exception stops here."""

import datetime
import json

import safe_harbor
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.records import AccessError_Denied
from wit_world.imports.types import Error_Internal, Error_InvalidInput, Error_NotFound, Request, Response


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        if not request.patient_id:
            raise Err(Error_InvalidInput("deidentify needs a patient"))
        patient_id = request.patient_id

        def read(resource_type: str) -> list[dict]:
            try:
                return [json.loads(r) for r in records.search(patient_id, resource_type)]
            except Err as err:
                if isinstance(err.value, AccessError_Denied):
                    return []
                raise

        try:
            resources = {t: read(t) for t in safe_harbor.RESOURCE_TYPES}
            pseudonym = records.pseudonym(patient_id)
            body = safe_harbor.deidentify(patient_id, resources, pseudonym, datetime.date.today())
        except LookupError:
            raise Err(Error_NotFound("patient not found")) from None
        except Err:
            raise Err(Error_Internal("records unavailable")) from None
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing escapes as a trap
            raise Err(Error_Internal(type(exc).__name__)) from None
        return Response(json.dumps(body, separators=(",", ":")))
