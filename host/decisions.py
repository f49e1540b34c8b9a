"""A short-lived cache of policy decisions, in front of any policy engine.

The same input document gets the same decision from the same policy: the document holds
everything the policy sees (subject and role, action, patient, their consent as read for
this request, purpose). So an identical request within `ttl` is answered from memory, with
the decision (and decision id) that was made for it. A consent or role change makes a
different document, so it never hits a stale entry. Failures are never cached, and while
the engine reports itself unhealthy the cache is bypassed: fail closed as before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import orjson

from host.policy import PolicyEngine
from host.types import Decision


class CachingPolicyEngine:
    """A PolicyEngine that remembers decisions for `ttl_s` seconds, at most `size` of them."""

    def __init__(self, engine: PolicyEngine, ttl_s: float, size: int) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def revision(self) -> str:
        return self._engine.revision

    def healthy(self) -> bool:
        return self._engine.healthy()

    def decide(self, input: dict[str, Any]) -> Decision:
        if self._ttl_s <= 0 or self._size <= 0:
            return self._engine.decide(input)
        key = orjson.dumps(input, option=orjson.OPT_SORT_KEYS)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > now:
                self._entries.move_to_end(key)
                found: Decision | None = entry[1]
            else:
                found = None
        if found is not None and self._engine.healthy():
            self.hits += 1
            return found
        self.misses += 1
        decision = self._engine.decide(input)  # raises on failure: nothing cached
        with self._lock:
            self._entries[key] = (now + self._ttl_s, decision)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return decision
