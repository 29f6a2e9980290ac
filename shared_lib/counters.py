"""Named counters in this process, thread-safe: what a service counts of its events (notified, duplicate…,
stored, conflict…), readable by tests and summaries; a bootstrap may also export each increment as a metric.
Nothing is registered at import time."""

from __future__ import annotations

import threading
from collections import Counter


class InProcessCounters:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def increment(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counts[name] += by

    def value(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
