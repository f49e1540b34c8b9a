"""fhir_export: the WIT adapter over export.py. Every exception stops here."""

import json

import export
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.records import AccessError_Denied
from wit_world.imports.types import Error_Internal, Error_InvalidInput, Error_NotFound, Request, Response


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        if not request.patient_id:
            raise Err(Error_InvalidInput("fhir_export needs a patient"))
        patient_id = request.patient_id
        try:
            bundle_type = json.loads(request.args).get("type", "searchset")
        except Exception:  # noqa: BLE001
            raise Err(Error_InvalidInput("args must be a JSON object")) from None

        def read(resource_type: str) -> list[str]:
            try:
                return records.search(patient_id, resource_type)
            except Err as err:
                if isinstance(err.value, AccessError_Denied):
                    return []  # not granted: the export simply has none of it
                raise

        try:
            return Response(export.export(read, bundle_type))
        except export.PatientNotFound:
            raise Err(Error_NotFound("patient not found")) from None
        except ValueError:
            raise Err(Error_InvalidInput("unsupported bundle type")) from None
        except Err:
            raise Err(Error_Internal("records unavailable")) from None
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing escapes as a trap
            raise Err(Error_Internal(type(exc).__name__)) from None
