"""Product info cached in this process for a while (a Memcached adapter will implement the same port).

Names and prices change rarely; the catalogue stays the source of truth, so losing the cache costs only calls.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from functions.cart.domain import Product


class InMemoryTtlProductCache:
    """Entries live `ttl_seconds` (0: nothing is ever kept); the oldest go first beyond `max_entries`."""

    def __init__(
        self, ttl_seconds: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[int, tuple[float, Product]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sku: int) -> Product | None:
        with self._lock:
            entry = self._entries.get(sku)
            if entry is None:
                return None
            expires, product = entry
            if self._clock() >= expires:
                del self._entries[sku]
                return None
            return product

    def put(self, product: Product) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[product.sku] = (self._clock() + self.ttl, product)
            self._entries.move_to_end(product.sku)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
