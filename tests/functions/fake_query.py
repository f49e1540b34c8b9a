"""`records.query` for guests under CPython: the host's own evaluator (host.search) over fake records.

The store evaluates a query on its sealed index; `host.search.memory.evaluate` builds the same index
from resources in memory and selects and projects with the same `SearchQuery`, so a guest's
parameters mean here exactly what they mean in the host (one the host refuses raises InvalidRequest).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from host.search.memory import evaluate

__all__ = ["evaluate", "querier"]


def querier(resources: Sequence[dict[str, Any]]) -> Any:
    """A guest's `query(resource_type, params)` over parsed resources, evaluated as the host would."""

    def query(resource_type: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        bodies = [json.dumps(r) for r in resources if r.get("resourceType") == resource_type]
        return [json.loads(body) for body in evaluate(resource_type, params, bodies)]

    return query
