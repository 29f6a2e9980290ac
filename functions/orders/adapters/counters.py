"""Ingestion counters in this process (stored, duplicate, conflict, invalid).

Kept in memory and readable by tests, the batch worker's summary and a future metrics endpoint; nothing is
registered at import time.
"""

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
