"""Product info cached for a while: in this process (the ProductCache port), or in a cache every replica
shares (Memcached) wrapped around the product catalogue itself, with a short-lived tier in this process in
front of it.

Names and prices change rarely; the catalogue stays the source of truth, so losing the cache costs only calls.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence

from functions.cart.domain import Product
from functions.cart.ports import ProductCatalog
from shared_lib.cache import Cache, InProcessCache, decode, load_through
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


class LocalProducts:
    """Products kept in this process in front of the shared cache (an InProcessCache): each for at most
    `ttl_seconds`, and never past the moment its shared entry goes stale (`until`, wall-clock seconds, written
    into the entry by the replica that loaded it), so this tier adds no staleness to the shared cache's TTL.
    At most `max_entries`, the least recently used going first. Lookups are counted under `name`."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        name: str = "cart-products-in-process",
    ) -> None:
        self.ttl = ttl_seconds
        self.cache = InProcessCache(max_entries, clock, name)
        self._wall_clock = wall_clock
        # An entry's bytes are decoded into its Product once, not on every hit: the decoding is memoised by
        # the stored bytes (the cache hands out the same bytes object for an entry until it is replaced). A
        # Product is frozen, so every caller may share it; a changed product is other bytes, decoded anew,
        # and the lifetimes stay the cache's own (the memo only spares json.loads of what it still holds).
        self._decoded = functools.lru_cache(maxsize=max_entries)(_decode)

    @staticmethod
    def key(sku: int) -> str:
        return f"product:{sku}"

    def get_many(self, skus: Sequence[int]) -> tuple[dict[int, Product], list[int]]:
        """(the products kept and still fresh, the SKUs that were not)."""
        keys = [self.key(sku) for sku in skus]
        kept = self.cache.get_many_encoded(keys)
        found: dict[int, Product] = {}
        missing: list[int] = []
        decoded = self._decoded
        for sku, key in zip(skus, keys, strict=True):
            data = kept.get(key)
            if data is None:
                missing.append(sku)
            else:
                found[sku] = decoded(data)
        return found, missing

    def keep(self, product: Product, until: object) -> None:
        """Keep `product`, read from a shared entry fresh until `until` (None: unknown, so not kept)."""
        if not isinstance(until, (int, float)) or isinstance(until, bool):
            return
        life = min(self.ttl, float(until) - self._wall_clock())
        if life > 0:
            self.cache.set(self.key(product.sku), _to_json(product), life)

    @property
    def size(self) -> int:
        return self.cache.size[0]


class CachedProductCatalog:
    """The product catalogue behind a shared cache (Memcached): a ProductCatalog that asks the inner one only
    for what no replica cached within `ttl_seconds`.

    Concurrent misses for one SKU make one product call (shared_lib.cache.load_through: in this process and
    across replicas), and a list still fans out at most `workers` calls at a time. A cache outage costs calls,
    never a failed request. Unknown SKUs are not cached: a SKU added to the catalogue shows up at once.

    `local`: a tier in this process in front of the shared cache (LocalProducts): what it holds is served
    without a round trip, for at most its TTL and never past the shared entry's own expiry, so a name or price
    change shows within `ttl_seconds` of its load as without it. Each shared entry says until when it is
    fresh (`until`, wall-clock seconds); an entry without it (written by an older replica) is not kept here.
    """

    def __init__(
        self,
        inner: ProductCatalog,
        cache: Cache,
        ttl_seconds: float,
        *,
        workers: int = 5,
        lock_wait: float = 2.0,
        local: LocalProducts | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.ttl = ttl_seconds
        self.workers = workers
        self.lock_wait = lock_wait  # how long to wait for another replica's call before calling ourselves
        self.local = local if local is not None and local.ttl > 0 else None
        self._wall_clock = wall_clock

    @staticmethod
    def key(sku: int) -> str:
        return f"product:v1:{sku}"

    def _load(self, sku: int) -> dict[str, object] | None:
        value = _to_json(self.inner.get(sku))
        if value is not None:
            value["until"] = self._wall_clock() + self.ttl  # the shared entry's expiry, for the local tier
        return value

    def _found(self, value: dict[str, object]) -> Product:
        product = _from_json(value)
        if self.local is not None:
            self.local.keep(product, value.get("until"))
        return product

    def get(self, sku: int) -> Product | None:
        if self.local is not None:
            kept, _ = self.local.get_many((sku,))
            if kept:
                return kept[sku]
        return self._through(sku)

    def _through(self, sku: int) -> Product | None:
        """From the shared cache, else the inner catalogue (stored in the shared cache for the others)."""
        value, _hit = load_through(
            self.cache, self.key(sku), self.ttl, lambda: self._load(sku), wait=self.lock_wait
        )
        return None if value is None else self._found(value)

    def many(self, skus: Sequence[int]) -> dict[int, Product]:
        if self.local is not None:
            found, wanted = self.local.get_many(skus)
            if not wanted:
                return found
        else:
            found, wanted = {}, list(skus)
        cached = self.cache.get_many([self.key(sku) for sku in wanted])
        for sku in wanted:
            value = cached.get(self.key(sku))
            if value is not None:
                found[sku] = self._found(value)
        missing = [sku for sku in dict.fromkeys(wanted) if sku not in found]
        if missing:
            cancel = threading.Event()
            loaded = map_bounded(self._through, missing, self.workers, cancel=cancel)
            found.update({p.sku: p for p in loaded if p is not None})
        return found


def _to_json(product: Product | None) -> dict[str, object] | None:
    return None if product is None else {"sku": product.sku, "name": product.name, "price": product.price}


def _from_json(value: dict[str, object]) -> Product:
    return Product(sku=int(str(value["sku"])), name=str(value["name"]), price=int(str(value["price"])))


def _decode(data: bytes) -> Product:
    return _from_json(decode(data))
