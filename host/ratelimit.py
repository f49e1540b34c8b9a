"""Per-subject budgets: how many break-glass accesses and searches a subject may make in a window."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Budget:
    """At most `limit` spends per subject in any `window_s` seconds (a sliding window, in memory)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 0 or window_s <= 0:
            raise ValueError("a budget needs a limit >= 0 and a positive window")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._spent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def spend(self, subject_id: str) -> bool:
        """Spend one unit for `subject_id`; False (and nothing spent) when the budget is used up."""
        now = self._clock()
        with self._lock:
            spent = self._spent.setdefault(subject_id, deque())
            while spent and now - spent[0] >= self.window_s:
                spent.popleft()
            if len(spent) >= self.limit:
                return False
            spent.append(now)
            return True
