"""The cart's use cases against stateful in-memory fakes: outcomes, and the cart after every failure."""

from __future__ import annotations

import pytest

from functions.cart.adapters.cache import InMemoryTtlProductCache
from functions.cart.domain import (
    UINT32_MAX,
    CartLine,
    EmptyCartError,
    NotEnoughStockError,
    OrderRejectedError,
    UnknownSkuError,
)
from shared_lib.errors import TransientError
from tests.unit.cart.fakes import BOOK, PEN, TEA, FakeClock, Shop

USER = 31337


@pytest.fixture
def shop() -> Shop:
    return Shop()


def test_adding_puts_the_count_in_the_cart_and_adding_again_sums(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)
    shop.service.add_item(USER, BOOK.sku, 3)
    shop.service.add_item(USER, PEN.sku, 1)
    assert shop.carts.items_of(USER) == {BOOK.sku: 5, PEN.sku: 1}


def test_an_unknown_sku_leaves_the_cart_untouched(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 1)
    with pytest.raises(UnknownSkuError):
        shop.service.add_item(USER, 404, 1)
    assert shop.carts.items_of(USER) == {BOOK.sku: 1}


def test_the_resulting_count_may_reach_the_stock_but_not_pass_it(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 6)
    with pytest.raises(NotEnoughStockError):
        shop.service.add_item(USER, BOOK.sku, 5)  # 11 > 10
    assert shop.carts.items_of(USER) == {BOOK.sku: 6}
    shop.service.add_item(USER, BOOK.sku, 4)  # exactly 10
    assert shop.carts.items_of(USER) == {BOOK.sku: 10}


def test_a_first_add_above_the_stock_stores_nothing(shop: Shop) -> None:
    with pytest.raises(NotEnoughStockError):
        shop.service.add_item(USER, BOOK.sku, 11)
    assert shop.carts.items_of(USER) == {}


def test_a_product_without_a_stock_record_cannot_be_added(shop: Shop) -> None:
    with pytest.raises(NotEnoughStockError):
        shop.service.add_item(USER, TEA.sku, 1)
    assert shop.carts.items_of(USER) == {}


def test_a_line_never_holds_more_than_a_uint32_even_with_more_stock(shop: Shop) -> None:
    shop.service.add_item(USER, PEN.sku, UINT32_MAX)
    with pytest.raises(NotEnoughStockError):
        shop.service.add_item(USER, PEN.sku, 1)
    assert shop.carts.items_of(USER) == {PEN.sku: UINT32_MAX}


@pytest.mark.parametrize("down", ["catalog", "stock"])
def test_an_outage_while_adding_leaves_the_cart_untouched(shop: Shop, down: str) -> None:
    shop.service.add_item(USER, BOOK.sku, 1)
    getattr(shop, down).down = True
    with pytest.raises(TransientError):
        shop.service.add_item(USER, BOOK.sku, 1)
    assert shop.carts.items_of(USER) == {BOOK.sku: 1}


def test_deleting_and_clearing_are_quiet_when_there_is_nothing_to_remove(shop: Shop) -> None:
    shop.service.delete_item(USER, BOOK.sku)
    shop.service.clear_cart(USER)
    shop.service.add_item(USER, BOOK.sku, 1)
    shop.service.add_item(USER, PEN.sku, 1)
    shop.service.delete_item(USER, BOOK.sku)
    assert shop.carts.items_of(USER) == {PEN.sku: 1}
    shop.service.clear_cart(USER)
    assert shop.carts.items_of(USER) == {}


def test_a_list_is_sorted_by_sku_priced_by_the_catalogue_and_totalled(shop: Shop) -> None:
    shop.service.add_item(USER, PEN.sku, 3)
    shop.service.add_item(USER, BOOK.sku, 2)
    view = shop.service.list_cart(USER)
    assert view.lines == (
        CartLine(BOOK.sku, BOOK.name, 2, BOOK.price),
        CartLine(PEN.sku, PEN.name, 3, PEN.price),
    )
    assert view.total_price == 2 * 3379 + 3 * 100


def test_an_empty_or_absent_cart_is_not_found(shop: Shop) -> None:
    with pytest.raises(EmptyCartError):
        shop.service.list_cart(USER)
    shop.service.add_item(USER, BOOK.sku, 1)
    shop.service.delete_item(USER, BOOK.sku)
    with pytest.raises(EmptyCartError):
        shop.service.list_cart(USER)


def test_a_product_withdrawn_from_the_catalogue_is_left_out_of_the_list(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 1)
    shop.service.add_item(USER, PEN.sku, 1)
    del shop.catalog.products[PEN.sku]
    view = shop.service.list_cart(USER)
    assert [line.sku for line in view.lines] == [BOOK.sku]
    assert shop.carts.items_of(USER) == {BOOK.sku: 1, PEN.sku: 1}  # still in the cart


def test_a_catalogue_outage_while_listing_is_transient(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 1)
    shop.catalog.down = True
    with pytest.raises(TransientError):
        shop.service.list_cart(USER)


def test_cached_products_are_listed_through_a_catalogue_outage_until_they_expire() -> None:
    shop = Shop(cache_ttl=60)
    shop.service.add_item(USER, BOOK.sku, 1)  # the add caches the book
    shop.catalog.down = True
    assert shop.service.list_cart(USER).lines[0].name == BOOK.name
    shop.clock.now += 61
    with pytest.raises(TransientError):
        shop.service.list_cart(USER)


def test_a_ttl_of_zero_caches_nothing() -> None:
    shop = Shop(cache_ttl=0)
    shop.service.add_item(USER, BOOK.sku, 1)
    shop.catalog.down = True
    with pytest.raises(TransientError):
        shop.service.list_cart(USER)


def test_the_cache_forgets_the_oldest_beyond_its_size() -> None:
    clock = FakeClock()
    cache = InMemoryTtlProductCache(60, max_entries=2, clock=clock)
    for product in (BOOK, PEN, TEA):
        cache.put(product)
    assert cache.get(BOOK.sku) is None
    assert cache.get(PEN.sku) == PEN
    assert cache.get(TEA.sku) == TEA


def test_checkout_orders_the_whole_cart_then_empties_it(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)
    shop.service.add_item(USER, PEN.sku, 1)
    order_id = shop.service.checkout(USER)
    assert shop.orders.orders[order_id] == (USER, {BOOK.sku: 2, PEN.sku: 1})
    assert shop.carts.items_of(USER) == {}


def test_checkout_of_an_empty_cart_orders_nothing(shop: Shop) -> None:
    with pytest.raises(EmptyCartError):
        shop.service.checkout(USER)
    assert shop.orders.orders == {}


def test_a_refused_reservation_leaves_the_cart_as_it_was(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)
    shop.orders.reject = True
    with pytest.raises(OrderRejectedError):
        shop.service.checkout(USER)
    assert shop.carts.items_of(USER) == {BOOK.sku: 2}


def test_a_loms_outage_at_checkout_leaves_the_cart_as_it_was(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)
    shop.orders.down = True
    with pytest.raises(TransientError):
        shop.service.checkout(USER)
    assert shop.carts.items_of(USER) == {BOOK.sku: 2}


def test_what_is_added_while_loms_creates_the_order_stays_in_the_cart(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)

    def another_tab_adds() -> None:
        shop.service.add_item(USER, BOOK.sku, 1)
        shop.service.add_item(USER, PEN.sku, 4)

    shop.orders.during = another_tab_adds
    order_id = shop.service.checkout(USER)
    assert shop.orders.orders[order_id] == (USER, {BOOK.sku: 2})
    assert shop.carts.items_of(USER) == {BOOK.sku: 1, PEN.sku: 4}


def test_a_keyed_checkout_retried_after_the_cart_failed_to_clear_makes_one_order(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)
    clear = shop.carts.remove_ordered

    def fails_once(user_id: int, items: object) -> None:
        monkeypatch.setattr(shop.carts, "remove_ordered", clear)
        raise TransientError("the cart database went away")

    monkeypatch.setattr(shop.carts, "remove_ordered", fails_once)
    with pytest.raises(TransientError):
        shop.service.checkout(USER, request_key="k-1")
    order_id = shop.service.checkout(USER, request_key="k-1")  # the client retries with the same key
    assert list(shop.orders.orders) == [order_id]
    assert shop.carts.items_of(USER) == {}
