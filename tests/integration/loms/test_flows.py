"""loms use cases on the real PostgreSQL adapters: one shard, and two (orders with or apart from stock)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from functions.loms.adapters.pg_shards import Shards
from functions.loms.domain import (
    InsufficientStockError,
    Item,
    OrderNotCancellableError,
    OrderNotPayableError,
    OrderStatus,
    StockLevel,
    UnknownOrderError,
    UnknownSkuError,
)
from tests.integration.loms.conftest import PgLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]


def test_create_reserves_and_order_info_reads_it_back(loms: PgLoms, unique_id: UniqueId) -> None:
    user, a, b = loms.user(unique_id()), unique_id(), unique_id()
    loms.put_stock(a, 300, 35)
    loms.put_stock(b, 10)
    order_id = loms.service.create_order(user, [Item(b, 4), Item(a, 3), Item(b, 1)])
    assert order_id % loms.shard_count == loms.home_shard
    order = loms.service.order_info(order_id)
    assert (order.order_id, order.user_id, order.status) == (order_id, user, OrderStatus.AWAITING_PAYMENT)
    assert order.items == (Item(a, 3), Item(b, 5))
    assert loms.service.stock_info(a) == 262
    assert loms.service.stock_info(b) == 5
    assert loms.reservations(order_id) == {a: 3, b: 5}
    assert loms.orders_of(user) == [(order_id, "awaiting payment")]


def test_one_short_item_reserves_nothing_and_stores_a_failed_order(loms: PgLoms, unique_id: UniqueId) -> None:
    user, a, b, c = loms.user(unique_id()), unique_id(), unique_id(), unique_id()
    loms.put_stock(a, 10)
    loms.put_stock(b, 5, 3)
    loms.put_stock(c, 10)
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(user, [Item(a, 2), Item(b, 3), Item(c, 1)])
    assert (refused.value.sku, refused.value.available) == (b, 2)
    order_id = refused.value.order_id
    assert order_id is not None
    assert loms.service.order_info(order_id).status is OrderStatus.FAILED
    assert loms.orders_of(user) == [(order_id, "failed")]
    assert [loms.level(s) for s in (a, b, c)] == [
        StockLevel(a, 10, 0),
        StockLevel(b, 5, 3),
        StockLevel(c, 10, 0),
    ]
    assert loms.reservations(order_id) == {}


def test_an_unknown_sku_fails_the_order(loms: PgLoms, unique_id: UniqueId) -> None:
    user, a, missing = loms.user(unique_id()), unique_id(), unique_id()
    loms.put_stock(a, 10)
    with pytest.raises(InsufficientStockError, match="no stock record"):
        loms.service.create_order(user, [Item(a, 1), Item(missing, 1)])
    assert [status for _, status in loms.orders_of(user)] == ["failed"]
    assert loms.level(a) == StockLevel(a, 10, 0)


def test_pay_sells_once(loms: PgLoms, unique_id: UniqueId) -> None:
    user, a, b = loms.user(unique_id()), unique_id(), unique_id()
    loms.put_stock(a, 10, 1)
    loms.put_stock(b, 10)
    order_id = loms.service.create_order(user, [Item(a, 3), Item(b, 2)])
    for _ in range(2):
        loms.service.pay_order(order_id)
        assert loms.service.order_info(order_id).status is OrderStatus.PAID
        assert [loms.level(a), loms.level(b)] == [StockLevel(a, 7, 1), StockLevel(b, 8, 0)]
    assert loms.reservations(order_id) == {}
    with pytest.raises(OrderNotCancellableError):
        loms.service.cancel_order(order_id)
    assert loms.service.order_info(order_id).status is OrderStatus.PAID


def test_cancel_releases_once(loms: PgLoms, unique_id: UniqueId) -> None:
    user, a = loms.user(unique_id()), unique_id()
    loms.put_stock(a, 10, 1)
    order_id = loms.service.create_order(user, [Item(a, 3)])
    for _ in range(2):
        loms.service.cancel_order(order_id)
        assert loms.service.order_info(order_id).status is OrderStatus.CANCELLED
        assert loms.level(a) == StockLevel(a, 10, 1)
    with pytest.raises(OrderNotPayableError):
        loms.service.pay_order(order_id)
    assert loms.level(a) == StockLevel(a, 10, 1)


def test_a_failed_order_can_be_neither_paid_nor_cancelled(loms: PgLoms, unique_id: UniqueId) -> None:
    user, a = loms.user(unique_id()), unique_id()
    loms.put_stock(a, 1)
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(user, [Item(a, 2)])
    order_id = refused.value.order_id
    assert order_id is not None
    with pytest.raises(OrderNotPayableError):
        loms.service.pay_order(order_id)
    with pytest.raises(OrderNotCancellableError):
        loms.service.cancel_order(order_id)
    assert loms.service.order_info(order_id).status is OrderStatus.FAILED


def test_unknown_order_and_sku(loms: PgLoms, unique_id: UniqueId) -> None:
    missing = unique_id() * 1000  # far above any id the shared sequences have handed out
    for use_case in (loms.service.order_info, loms.service.pay_order, loms.service.cancel_order):
        with pytest.raises(UnknownOrderError):
            use_case(missing)
    with pytest.raises(UnknownSkuError):
        loms.service.stock_info(unique_id())


def test_stock_info_is_clamped_at_zero(loms: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    loms.put_stock(sku, 100, 101)
    assert loms.service.stock_info(sku) == 0


def test_with_two_shards_orders_live_in_their_shard_and_stock_in_the_first(
    two_shards: Shards, unique_id: UniqueId
) -> None:
    sku = unique_id()
    PgLoms(two_shards).put_stock(sku, 10)
    for shard in (0, 1):
        loms = PgLoms(two_shards, home_shard=shard)
        order_id = loms.service.create_order(loms.user(unique_id()), [Item(sku, 1)])
        assert order_id % 2 == shard
        assert two_shards.primaries[shard].run(
            "SELECT status FROM orders WHERE order_id = :o", o=order_id
        ) == [["awaiting payment"]]
        assert (
            two_shards.primaries[1 - shard].run("SELECT 1 FROM orders WHERE order_id = :o", o=order_id) == []
        )
        assert two_shards.stock.run("SELECT count FROM reservations WHERE order_id = :o", o=order_id) == [[1]]
    assert two_shards.primaries[1].run("SELECT count(*) FROM stocks WHERE sku = :s", s=sku) == [[0]]


def test_one_shard_hands_out_consecutive_ids(one_shard: Shards, unique_id: UniqueId) -> None:
    loms, sku = PgLoms(one_shard), unique_id()
    loms.put_stock(sku, 10)
    first = loms.service.create_order(unique_id(), [Item(sku, 1)])
    second = loms.service.create_order(unique_id(), [Item(sku, 1)])
    assert second == first + 1
