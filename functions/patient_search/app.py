"""patient_search: find patients by name, birth date or identifier through the host's directory.

It reads no patient record: the directory answers only id, name, birth date and gender of
at most 20 matches, and the host audits every query.
"""

import json

from componentize_py_types import Err
from wardfn_guest import error_boundary, json_response
from wit_world import exports
from wit_world.imports import directory
from wit_world.imports.records import AccessError_Denied
from wit_world.imports.types import Error_InvalidInput, Request, Response

MAX_MATCHES = 20


class Handler(exports.Handler):
    @error_boundary(host_failure="directory unavailable")
    def handle(self, request: Request) -> Response:
        try:
            args = json.loads(request.args)
            query = directory.Query(
                name=args.get("name"), birth_date=args.get("birth_date"), identifier=args.get("identifier")
            )
        except Exception:  # noqa: BLE001
            raise Err(Error_InvalidInput("args must name a name, a birth_date or an identifier")) from None
        try:
            matches = directory.search(query, MAX_MATCHES)
        except Err as err:
            if isinstance(err.value, AccessError_Denied):
                raise Err(Error_InvalidInput("the directory refused this search")) from None
            raise  # unavailable: the boundary answers "directory unavailable"
        body = {
            "count": len(matches),
            "matches": [{"id": m.id, "name": m.name, "birth_date": m.birth_date, "gender": m.gender} for m in matches],
        }
        return json_response(body)
