"""A bounded decision cache in front of either policy engine, and its counters.

Keyed by the whole input document (canonical JSON), so two requests share an answer only when
everything the policy could look at is the same. Emptied when the engine reports another policy
revision, and never consulted while the engine is unhealthy: an outage then denies at once
instead of serving answers from before it. Every answer, cached or not, gets its own decision id.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from host.policy.document import canonical_json
from host.policy.engine import PolicyEngine
from host.types import Decision


@dataclass
class CacheStats:
    """Counters for the metrics: hits, misses, and lookups skipped because the engine was unhealthy."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    evictions: int = 0
    clears: int = 0

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses + self.bypassed
        return self.hits / lookups if lookups else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hit_rate": self.hit_rate}


class CachingPolicyEngine:
    """A `PolicyEngine` that remembers up to `max_entries` decisions of the engine it wraps."""

    def __init__(self, engine: PolicyEngine, max_entries: int) -> None:
        self.engine = engine
        self._max_entries = max_entries
        self._entries: OrderedDict[str, Decision] = OrderedDict()
        self._revision: str | None = None
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @property
    def revision(self) -> str:
        return self.engine.revision

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, input: dict[str, Any]) -> Decision:
        if self._max_entries <= 0:
            return self.engine.decide(input)
        if not self.engine.healthy():
            with self._lock:
                self.stats.bypassed += 1
                self._clear()  # whatever comes back may be another policy
            return self.engine.decide(input)
        key = canonical_json(input)
        with self._lock:
            self._follow(self.engine.revision)
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return dataclasses.replace(cached, id=uuid.uuid4().hex, cached=True)
            self.stats.misses += 1
        decision = self.engine.decide(input)
        with self._lock:
            self._follow(decision.revision)
            self._entries[key] = decision
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
                self.stats.evictions += 1
        return decision

    def healthy(self) -> bool:
        return self.engine.healthy()

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def close(self) -> None:
        self.engine.close()

    def _follow(self, revision: str) -> None:
        """Empty the cache when the policy revision changes. Call with the lock held."""
        if revision != self._revision:
            self._clear()
            self._revision = revision

    def _clear(self) -> None:
        if self._entries:
            self._entries.clear()
            self.stats.clears += 1
