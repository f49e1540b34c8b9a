"""A FHIR search over resources held in memory, evaluated exactly as the store evaluates it on its index."""

from __future__ import annotations

import json
from collections.abc import Sequence

from host.search.columns import Columns
from host.search.params import Index
from host.search.query import parse_query


def evaluate(resource_type: str, params: Sequence[tuple[str, str]], bodies: Sequence[str]) -> list[str]:
    """The bodies (FHIR JSON of `resource_type`) that `params` select, in the store's order, projected as
    the store projects them; InvalidRequest for a parameter or value the store does not support."""
    wanted = parse_query(resource_type, params)
    by_id: dict[str, str] = {}
    for position, body in enumerate(bodies):
        resource = json.loads(body)
        # The store never holds a resource without an id; a stand-in keeps such bodies apart here.
        by_id[str(resource.get("id") or f"~{position:08d}")] = body
    if not by_id:
        return []  # as the store: no index is kept for a type the patient has none of
    if not wanted.indexed:
        ids = wanted.page(sorted(by_id))
    else:
        index = Index(resource_type)
        for rid, body in by_id.items():
            index.add({**json.loads(body), "id": rid})
        ids = wanted.select(Columns(index.to_bytes()))
    return [wanted.project(by_id[rid]) for rid in ids]
