"""CachedProductCatalog on fakes and the in-process cache: warm lists make no product call, concurrent misses
make one, unknown SKUs are not cached; and bootstrap's choice between it and the in-process cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from functions.cart import bootstrap
from functions.cart.adapters.cache import CachedProductCatalog, InMemoryTtlProductCache
from functions.cart.adapters.product_http import HttpProductCatalog
from functions.cart.domain import Product
from functions.cart.service import CartService
from functions.cart.settings import CartSettings
from shared_lib.cache import InProcessCache
from shared_lib.errors import TransientError
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
