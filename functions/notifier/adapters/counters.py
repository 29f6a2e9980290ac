"""Event counters in this process (notified, duplicate, out_of_order, poison, delivered, refused).

Kept in memory and readable by tests and a future metrics endpoint; nothing is registered at import time.
"""

from __future__ import annotations

import threading
from collections import Counter


class InProcessCounters:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def increment(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def value(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
