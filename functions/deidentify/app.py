"""deidentify: the WIT adapter over safe_harbor.py. Every exception stops at the boundary."""

import datetime
import json

import safe_harbor
from wardfn_guest import error_boundary, json_response, not_found, patient_of, read_granted
from wardfn_withheld import Withheld
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.types import Request, Response


class Handler(exports.Handler):
    # safe_harbor raises LookupError when the record has no Patient resource.
    @error_boundary({LookupError: not_found("patient not found")})
    def handle(self, request: Request) -> Response:
        patient_id = patient_of(request, "deidentify")
        resources: dict[str, list[dict]] = {}
        withheld: list[str] = []
        for resource_type in safe_harbor.RESOURCE_TYPES:
            try:
                resources[resource_type] = [json.loads(r) for r in read_granted(patient_id, resource_type)]
            except Withheld:
                withheld.append(resource_type)
        pseudonym = records.pseudonym(patient_id)
        today = datetime.date.today()
        return json_response(safe_harbor.deidentify(patient_id, resources, pseudonym, today, tuple(withheld)))
