"""`records.query` for guests under CPython: the host's own evaluator (host.store.search_query) over fake records.

The host evaluates a query on its stored index; here the same index is built from the resources in
memory, and the same `SearchQuery` selects and projects from it, so a guest's parameters mean here
exactly what they mean in the host (a parameter the host refuses raises InvalidRequest here too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from host.store.search_columns import Columns
from host.store.search_params import Index
from host.store.search_query import parse_query


def evaluate(resource_type: str, params: Sequence[tuple[str, str]], bodies: Sequence[str]) -> list[str]:
    """The bodies (FHIR JSON of one type) that `params` select, in the host's order, projected as the host does."""
    wanted = parse_query(resource_type, params)
    by_id: dict[str, str] = {}
    for position, body in enumerate(bodies):
        resource = json.loads(body)
        # Fixtures may leave ids out; the store never does. A stand-in keeps them apart.
        by_id[str(resource.get("id") or f"~{position:08d}")] = body
    if not by_id:
        return []  # as the host: no index is stored for a type the patient has none of
    if not wanted.indexed:
        ids = sorted(by_id)[: wanted.count]
    else:
        index = Index(resource_type)
        for rid, body in by_id.items():
            index.add({**json.loads(body), "id": rid})
        ids = wanted.select(Columns(index.to_bytes()))
    return [wanted.project(by_id[rid]) for rid in ids]


def querier(resources: Sequence[dict[str, Any]]) -> Any:
    """A guest's `query(resource_type, params)` over parsed resources, evaluated as the host would."""

    def query(resource_type: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        bodies = [json.dumps(r) for r in resources if r.get("resourceType") == resource_type]
        return [json.loads(body) for body in evaluate(resource_type, params, bodies)]

    return query
