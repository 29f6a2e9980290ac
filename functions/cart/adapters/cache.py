"""Product info cached for a while: in this process (the ProductCache port), or in a cache every replica
shares (Memcached) wrapped around the product catalogue itself.

Names and prices change rarely; the catalogue stays the source of truth, so losing the cache costs only calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from functions.cart.domain import Product
from functions.cart.ports import ProductCatalog
from shared_lib.cache import Cache, InProcessCache, load_through
from shared_lib.workpool import map_bounded


class InMemoryTtlProductCache:
    """The ProductCache port over a cache in this process (shared_lib.cache.InProcessCache, or the one given):
    entries live `ttl_seconds` (0: nothing is ever kept, nor counted); the oldest go first beyond
    `max_entries`. Lookups are counted under `name`."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "cart-products-in-process",
        cache: InProcessCache | None = None,
    ) -> None:
        self.ttl = ttl_seconds
        self.cache = cache if cache is not None else InProcessCache(max_entries, clock, name)

    @staticmethod
    def key(sku: int) -> str:
        return f"product:{sku}"

    def get(self, sku: int) -> Product | None:
        if self.ttl <= 0:
            return None
        value = self.cache.get(self.key(sku))
        return None if value is None else _from_json(value)

    def put(self, product: Product) -> None:
        if self.ttl > 0:
            self.cache.set(self.key(product.sku), _to_json(product), self.ttl)


class CachedProductCatalog:
    """The product catalogue behind a shared cache (Memcached): a ProductCatalog that asks the inner one only
    for what no replica cached within `ttl_seconds`.

    Concurrent misses for one SKU make one product call (shared_lib.cache.load_through: in this process and
    across replicas), and a list still fans out at most `workers` calls at a time. A cache outage costs calls,
    never a failed request. Unknown SKUs are not cached: a SKU added to the catalogue shows up at once.
    """

    def __init__(
        self,
        inner: ProductCatalog,
        cache: Cache,
        ttl_seconds: float,
        *,
        workers: int = 5,
        lock_wait: float = 2.0,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.ttl = ttl_seconds
        self.workers = workers
        self.lock_wait = lock_wait  # how long to wait for another replica's call before calling ourselves

    @staticmethod
    def key(sku: int) -> str:
        return f"product:v1:{sku}"

    def get(self, sku: int) -> Product | None:
        value, _hit = load_through(
            self.cache, self.key(sku), self.ttl, lambda: _to_json(self.inner.get(sku)), wait=self.lock_wait
        )
        return None if value is None else _from_json(value)

    def many(self, skus: Sequence[int]) -> dict[int, Product]:
        cached = self.cache.get_many([self.key(sku) for sku in skus])
        found: dict[int, Product] = {}
        for sku in skus:
            value = cached.get(self.key(sku))
            if value is not None:
                found[sku] = _from_json(value)
        missing = [sku for sku in dict.fromkeys(skus) if sku not in found]
        if missing:
            cancel = threading.Event()
            loaded = map_bounded(lambda sku: self.get(sku), missing, self.workers, cancel=cancel)
            found.update({p.sku: p for p in loaded if p is not None})
        return found


def _to_json(product: Product | None) -> dict[str, object] | None:
    return None if product is None else {"sku": product.sku, "name": product.name, "price": product.price}


def _from_json(value: dict[str, object]) -> Product:
    return Product(sku=int(str(value["sku"])), name=str(value["name"]), price=int(str(value["price"])))
