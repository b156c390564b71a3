"""Per-key request rate limit of the write endpoints: a sliding one-minute window in memory.

Each server process counts on its own (``serve --workers N`` allows up to N× the limit)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable


class RateLimiter:
    """At most ``per_minute`` calls per key in any 60 s. Constructor only stores arguments."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._calls: dict[int, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key_id: int) -> float | None:
        """Count one call of ``key_id``; ``None`` when allowed, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            calls = self._calls.setdefault(key_id, deque())
            while calls and calls[0] <= now - 60.0:
                calls.popleft()
            if len(calls) >= self.per_minute:
                return max(0.0, calls[0] + 60.0 - now)
            calls.append(now)
            return None
