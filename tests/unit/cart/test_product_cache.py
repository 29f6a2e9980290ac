"""CachedProductCatalog on fakes and the in-process cache: warm lists make no product call, concurrent misses
make one, unknown SKUs are not cached; and bootstrap's choice between it and the in-process cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from functions.cart import bootstrap
from functions.cart.adapters import cache as cache_module
from functions.cart.adapters.cache import CachedProductCatalog, InMemoryTtlProductCache, LocalProducts
from functions.cart.adapters.product_http import HttpProductCatalog
from functions.cart.domain import Product
from functions.cart.service import CartService
from functions.cart.settings import CartSettings
from shared_lib.cache import InProcessCache
from shared_lib.errors import TransientError
from shared_lib.workpool import map_bounded
from tests.unit.cart.fakes import (
    BOOK,
    PEN,
    TEA,
    FakeClock,
    InMemoryCarts,
    InMemoryCatalog,
    InMemoryOrders,
    InMemoryStock,
)

USER = 31337


class SlowCatalog(InMemoryCatalog):
    """The product service taking a while per lookup, so concurrent requests overlap."""

    def get(self, sku: int) -> Product | None:
        time.sleep(0.1)
        return super().get(sku)


def test_a_warm_list_makes_no_product_call() -> None:
    catalog = InMemoryCatalog(BOOK, PEN, TEA)
    cached = CachedProductCatalog(catalog, InProcessCache(), 60)
    assert cached.many([BOOK.sku, PEN.sku, TEA.sku]) == {BOOK.sku: BOOK, PEN.sku: PEN, TEA.sku: TEA}
    assert catalog.served == 3
    assert cached.many([TEA.sku, BOOK.sku, PEN.sku]) == {BOOK.sku: BOOK, PEN.sku: PEN, TEA.sku: TEA}
    assert cached.get(BOOK.sku) == BOOK
    assert catalog.served == 3


def test_a_list_through_the_cart_service_is_served_warm() -> None:
    catalog = InMemoryCatalog(BOOK, PEN)
    carts = InMemoryCarts()
    carts.add(USER, BOOK.sku, 2, limit=10)
    carts.add(USER, PEN.sku, 1, limit=10)
    service = CartService(
        carts=carts,
        catalog=CachedProductCatalog(catalog, InProcessCache(), 60),
        stock=InMemoryStock({}),
        orders=InMemoryOrders(),
        cache=InMemoryTtlProductCache(0),
    )
    first = service.list_cart(USER)
    served = catalog.served
    assert service.list_cart(USER) == first
    assert catalog.served == served


def test_unknown_skus_are_not_cached() -> None:
    catalog = InMemoryCatalog(BOOK)
    cached = CachedProductCatalog(catalog, InProcessCache(), 60)
    assert cached.get(404) is None
    catalog.products[404] = Product(404, "Новинка", 10)
    assert cached.get(404) == Product(404, "Новинка", 10)


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    catalog = InMemoryCatalog(BOOK)
    cached = CachedProductCatalog(catalog, InProcessCache(clock=clock), 60)
    cached.get(BOOK.sku)
    clock.now += 61
    cached.get(BOOK.sku)
    assert catalog.served == 2


def test_concurrent_misses_for_one_sku_make_one_product_call() -> None:
    catalog = SlowCatalog(BOOK, PEN)
    cached = CachedProductCatalog(catalog, InProcessCache(), 60)
    barrier = threading.Barrier(10)
    results: list[dict[int, Product]] = []

    def list_cart() -> None:
        barrier.wait()
        results.append(cached.many([BOOK.sku, PEN.sku]))

    threads = [threading.Thread(target=list_cart) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [{BOOK.sku: BOOK, PEN.sku: PEN}] * 10
    assert catalog.served == 2


def test_an_outage_of_the_catalogue_is_still_an_error() -> None:
    catalog = InMemoryCatalog(BOOK)
    catalog.down = True
    with pytest.raises(TransientError):
        CachedProductCatalog(catalog, InProcessCache(), 60).many([BOOK.sku])


class ListingCatalog(InMemoryCatalog):
    def many(self, skus: Sequence[int]) -> dict[int, Product]:
        raise AssertionError("the cached catalogue fans out over get(), with its own bound")


def test_a_list_fans_out_over_single_lookups() -> None:
    assert CachedProductCatalog(ListingCatalog(BOOK), InProcessCache(), 60).many([BOOK.sku]) == {
        BOOK.sku: BOOK
    }


# --- bootstrap ------------------------------------------------------------------------------------------


def test_without_memcached_the_in_process_cache_is_used() -> None:
    service = bootstrap.Root(CartSettings(memcached="")).cart_service
    assert isinstance(service.catalog, HttpProductCatalog)
    assert isinstance(service.cache, InMemoryTtlProductCache) and service.cache.ttl == 60


def test_cart_memcached_selects_the_shared_cache() -> None:
    service = bootstrap.Root(CartSettings(memcached="127.0.0.1:11211")).cart_service
    assert isinstance(service.catalog, CachedProductCatalog)
    assert isinstance(service.catalog.inner, HttpProductCatalog)
    assert service.catalog.ttl == 60
    assert isinstance(service.cache, InMemoryTtlProductCache) and service.cache.ttl == 0


# --- the tier in this process in front of the shared cache ----------------------------------------------


class CountingCache(InProcessCache):
    """The shared cache, counting the lookups that reach it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.lookups = 0

    def get(self, key: str) -> Any | None:
        self.lookups += 1
        return super().get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        self.lookups += 1
        return super().get_many(keys)


def tiered(
    catalog: InMemoryCatalog, local_ttl: float = 5, max_entries: int = 100
) -> tuple[CachedProductCatalog, CountingCache, FakeClock]:
    """A catalogue behind a shared cache and a local tier, one fake clock for all (monotonic and wall)."""
    clock = FakeClock()
    shared = CountingCache(clock)
    local = LocalProducts(local_ttl, max_entries, clock=clock, wall_clock=clock)
    return CachedProductCatalog(catalog, shared, 60, local=local, wall_clock=clock), shared, clock


def test_the_local_tier_serves_a_warm_list_without_the_shared_cache() -> None:
    catalog = InMemoryCatalog(BOOK, PEN, TEA)
    cached, shared, _clock = tiered(catalog)
    everything = {BOOK.sku: BOOK, PEN.sku: PEN, TEA.sku: TEA}
    assert cached.many([BOOK.sku, PEN.sku, TEA.sku]) == everything
    asked = shared.lookups
    assert cached.many([TEA.sku, BOOK.sku, PEN.sku]) == everything
    assert cached.get(PEN.sku) == PEN
    assert shared.lookups == asked
    assert catalog.served == 3


@pytest.mark.parametrize("tier", ["shared cache", "local tier"])
def test_a_warm_list_fans_nothing_out(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm list is served by the calling thread: the fan-out of product calls (map_bounded, a pool of
    threads made per call) is built only for SKUs that no cache held, never for a list every cache held."""
    fanned: list[list[int]] = []

    def counted(fn: Any, items: Any, limit: int, **kwargs: Any) -> Any:
        fanned.append(list(items))
        return map_bounded(fn, fanned[-1], limit, **kwargs)

    monkeypatch.setattr(cache_module, "map_bounded", counted)
    catalog = InMemoryCatalog(BOOK, PEN, TEA)
    shared = CachedProductCatalog(catalog, InProcessCache(), 60)
    cached = shared if tier == "shared cache" else tiered(catalog)[0]
    everything = {BOOK.sku: BOOK, PEN.sku: PEN, TEA.sku: TEA}
    assert cached.many([BOOK.sku, PEN.sku, TEA.sku]) == everything
    assert fanned == [[BOOK.sku, PEN.sku, TEA.sku]]  # cold: the three SKUs fanned out
    assert cached.many([TEA.sku, BOOK.sku, PEN.sku]) == everything
    assert cached.many([PEN.sku]) == {PEN.sku: PEN}
    assert fanned == [[BOOK.sku, PEN.sku, TEA.sku]]  # warm: nothing more


def test_the_local_tier_decodes_an_entry_once_and_a_changed_product_anew() -> None:
    catalog = InMemoryCatalog(BOOK)
    cached, _shared, clock = tiered(catalog, local_ttl=5)
    loaded = cached.many([BOOK.sku])[BOOK.sku]
    kept = cached.many([BOOK.sku])[BOOK.sku]
    assert kept == BOOK
    assert cached.many([BOOK.sku])[BOOK.sku] is kept and cached.get(BOOK.sku) is kept  # no decode per hit
    changed = Product(BOOK.sku, "Новое издание", BOOK.price + 1)
    catalog.products[BOOK.sku] = changed
    clock.now += 61  # past the shared entry's expiry: loaded again, with the change
    assert cached.many([BOOK.sku]) == {BOOK.sku: changed}
    assert cached.many([BOOK.sku]) == {BOOK.sku: changed}  # from the local tier now: the new values
    assert loaded == BOOK and catalog.served == 2


def test_the_local_tier_keeps_an_entry_for_its_ttl_only() -> None:
    catalog = InMemoryCatalog(BOOK)
    cached, shared, clock = tiered(catalog, local_ttl=5)
    cached.many([BOOK.sku])
    asked = shared.lookups
    clock.now += 4.9
    cached.many([BOOK.sku])
    assert shared.lookups == asked
    clock.now += 0.2  # past the local TTL: the shared cache is asked again (and still has it)
    assert cached.many([BOOK.sku]) == {BOOK.sku: BOOK}
    assert shared.lookups == asked + 1
    assert catalog.served == 1


def test_the_local_tier_never_keeps_an_entry_past_its_shared_expiry() -> None:
    catalog = InMemoryCatalog(BOOK)
    cached, shared, clock = tiered(catalog, local_ttl=5)
    cached.many([BOOK.sku])  # loaded now: fresh in the shared cache for 60 s
    clock.now += 58  # a replica that reads it now may keep it 2 s, not 5
    local = LocalProducts(5, clock=clock, wall_clock=clock)
    fresh = CachedProductCatalog(catalog, shared, 60, local=local, wall_clock=clock)
    assert fresh.many([BOOK.sku]) == {BOOK.sku: BOOK}
    asked = shared.lookups
    clock.now += 1.9
    fresh.many([BOOK.sku])
    assert shared.lookups == asked
    clock.now += 0.2  # 60.1 s after the load: the shared entry has expired, so the product is loaded again
    catalog.products[BOOK.sku] = Product(BOOK.sku, "Новое издание", BOOK.price + 1)
    assert fresh.many([BOOK.sku]) == {BOOK.sku: Product(BOOK.sku, "Новое издание", BOOK.price + 1)}
    assert catalog.served == 2


def test_an_entry_without_its_expiry_is_not_kept_locally() -> None:
    catalog = InMemoryCatalog(BOOK)
    cached, shared, _clock = tiered(catalog)
    # as an older replica wrote it: the product alone, no "until"
    shared.set(cached.key(BOOK.sku), {"sku": BOOK.sku, "name": BOOK.name, "price": BOOK.price}, 60)
    assert cached.many([BOOK.sku]) == {BOOK.sku: BOOK}
    asked = shared.lookups
    assert cached.many([BOOK.sku]) == {BOOK.sku: BOOK}
    assert shared.lookups == asked + 1
    assert catalog.served == 0


def test_the_local_tier_holds_at_most_max_entries_the_oldest_going_first() -> None:
    catalog = InMemoryCatalog(BOOK, PEN, TEA)
    cached, shared, _clock = tiered(catalog, max_entries=2)
    cached.many([BOOK.sku])
    cached.many([PEN.sku, TEA.sku])
    assert cached.local is not None and cached.local.size == 2
    asked = shared.lookups
    cached.many([PEN.sku, TEA.sku])
    assert shared.lookups == asked
    cached.many([BOOK.sku])  # dropped when TEA came: asked of the shared cache again
    assert shared.lookups == asked + 1
    assert catalog.served == 3


def test_a_local_ttl_of_zero_keeps_nothing_locally() -> None:
    catalog = InMemoryCatalog(BOOK)
    cached, shared, _clock = tiered(catalog, local_ttl=0)
    assert cached.local is None
    cached.many([BOOK.sku])
    asked = shared.lookups
    cached.many([BOOK.sku])
    assert shared.lookups == asked + 1


def test_with_memcached_the_local_tier_takes_its_ttl_from_the_settings() -> None:
    service = bootstrap.Root(CartSettings(memcached="127.0.0.1:11211")).cart_service
    assert isinstance(service.catalog, CachedProductCatalog)
    assert service.catalog.local is not None and service.catalog.local.ttl == 5
    off = bootstrap.Root(CartSettings(memcached="127.0.0.1:11211", product_local_ttl_seconds=0)).cart_service
    assert isinstance(off.catalog, CachedProductCatalog) and off.catalog.local is None
