"""loms use cases on the in-memory fakes: statuses, all-or-nothing reservation, idempotent pay and cancel."""

from __future__ import annotations

import pytest

from functions.loms.domain import (
    UINT32_MAX,
    EmptyOrderError,
    IllegalStatusChangeError,
    InsufficientStockError,
    Item,
    ItemCountOutOfRangeError,
    Order,
    OrderNotCancellableError,
    OrderNotPayableError,
    OrderStatus,
    StockLevel,
    UnknownOrderError,
    UnknownSkuError,
    merge_items,
)
from tests.unit.loms.fakes import InMemoryLoms

USER = 31337


@pytest.fixture
def loms() -> InMemoryLoms:
    world = InMemoryLoms()
    world.put_stock(1076963, total_count=300, reserved=35)
    world.put_stock(2956315, total_count=10, reserved=0)
    return world


def test_create_reserves_every_item_and_awaits_payment(loms: InMemoryLoms) -> None:
    order_id = loms.service.create_order(USER, [Item(2956315, 4), Item(1076963, 3)])
    order = loms.service.order_info(order_id)
    assert order.status is OrderStatus.AWAITING_PAYMENT
    assert order.user_id == USER
    assert order.items == (Item(1076963, 3), Item(2956315, 4))
    assert loms.service.stock_info(1076963) == 300 - 35 - 3
    assert loms.service.stock_info(2956315) == 10 - 4
    assert loms.reservations(order_id) == {1076963: 3, 2956315: 4}


def test_order_ids_are_fresh(loms: InMemoryLoms) -> None:
    first = loms.service.create_order(USER, [Item(2956315, 1)])
    second = loms.service.create_order(USER, [Item(2956315, 1)])
    assert first != second


def test_duplicate_skus_are_merged(loms: InMemoryLoms) -> None:
    order_id = loms.service.create_order(USER, [Item(2956315, 2), Item(1076963, 1), Item(2956315, 3)])
    assert loms.service.order_info(order_id).items == (Item(1076963, 1), Item(2956315, 5))
    assert loms.service.stock_info(2956315) == 5


def test_one_short_item_fails_the_order_and_reserves_nothing(loms: InMemoryLoms) -> None:
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(USER, [Item(1076963, 3), Item(2956315, 11)])
    order_id = refused.value.order_id
    assert order_id is not None
    assert str(order_id) in refused.value.message
    assert refused.value.sku == 2956315
    assert loms.service.order_info(order_id).status is OrderStatus.FAILED
    assert loms.level(1076963) == StockLevel(1076963, 300, 35)
    assert loms.level(2956315) == StockLevel(2956315, 10, 0)
    assert loms.reservations(order_id) == {}


def test_unknown_sku_fails_the_order(loms: InMemoryLoms) -> None:
    with pytest.raises(InsufficientStockError, match="no stock record") as refused:
        loms.service.create_order(USER, [Item(1076963, 1), Item(404, 1)])
    assert refused.value.order_id is not None
    assert loms.service.order_info(refused.value.order_id).status is OrderStatus.FAILED
    assert loms.level(1076963) == StockLevel(1076963, 300, 35)


def test_exactly_the_available_count_can_be_ordered(loms: InMemoryLoms) -> None:
    loms.service.create_order(USER, [Item(2956315, 10)])
    assert loms.service.stock_info(2956315) == 0
    with pytest.raises(InsufficientStockError):
        loms.service.create_order(USER, [Item(2956315, 1)])


def test_every_status_change_goes_through_change_status(loms: InMemoryLoms) -> None:
    ok = loms.service.create_order(USER, [Item(2956315, 1)])
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(USER, [Item(2956315, 100)])
    failed = refused.value.order_id
    loms.service.pay_order(ok)
    assert loms.state.status_changes == [
        (ok, OrderStatus.AWAITING_PAYMENT),
        (failed, OrderStatus.FAILED),
        (ok, OrderStatus.PAID),
    ]


@pytest.mark.parametrize(
    ("items", "error"),
    [([], EmptyOrderError), ([Item(2956315, UINT32_MAX), Item(2956315, 1)], ItemCountOutOfRangeError)],
)
def test_invalid_orders_store_nothing(loms: InMemoryLoms, items: list[Item], error: type[Exception]) -> None:
    with pytest.raises(error):
        loms.service.create_order(USER, items)
    assert loms.order_count() == 0
    assert loms.level(2956315) == StockLevel(2956315, 10, 0)


def test_pay_sells_the_reservation_once(loms: InMemoryLoms) -> None:
    order_id = loms.service.create_order(USER, [Item(1076963, 3)])
    loms.service.pay_order(order_id)
    assert loms.service.order_info(order_id).status is OrderStatus.PAID
    assert loms.level(1076963) == StockLevel(1076963, 297, 35)
    loms.service.pay_order(order_id)
    assert loms.level(1076963) == StockLevel(1076963, 297, 35)
    assert loms.reservations(order_id) == {}


def test_cancel_releases_the_reservation_once(loms: InMemoryLoms) -> None:
    order_id = loms.service.create_order(USER, [Item(1076963, 3)])
    loms.service.cancel_order(order_id)
    assert loms.service.order_info(order_id).status is OrderStatus.CANCELLED
    assert loms.level(1076963) == StockLevel(1076963, 300, 35)
    loms.service.cancel_order(order_id)
    assert loms.level(1076963) == StockLevel(1076963, 300, 35)


def test_paid_and_failed_orders_cannot_be_cancelled(loms: InMemoryLoms) -> None:
    paid = loms.service.create_order(USER, [Item(1076963, 1)])
    loms.service.pay_order(paid)
    with pytest.raises(OrderNotCancellableError):
        loms.service.cancel_order(paid)
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(USER, [Item(2956315, 11)])
    assert refused.value.order_id is not None
    with pytest.raises(OrderNotCancellableError):
        loms.service.cancel_order(refused.value.order_id)
    assert loms.service.order_info(paid).status is OrderStatus.PAID
    assert loms.level(1076963) == StockLevel(1076963, 299, 35)


def test_cancelled_and_failed_orders_cannot_be_paid(loms: InMemoryLoms) -> None:
    cancelled = loms.service.create_order(USER, [Item(1076963, 1)])
    loms.service.cancel_order(cancelled)
    with pytest.raises(OrderNotPayableError):
        loms.service.pay_order(cancelled)
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(USER, [Item(2956315, 11)])
    assert refused.value.order_id is not None
    with pytest.raises(OrderNotPayableError, match="failed"):
        loms.service.pay_order(refused.value.order_id)
    assert loms.service.order_info(cancelled).status is OrderStatus.CANCELLED
    assert loms.level(1076963) == StockLevel(1076963, 300, 35)


def test_unknown_orders(loms: InMemoryLoms) -> None:
    for use_case in (loms.service.order_info, loms.service.pay_order, loms.service.cancel_order):
        with pytest.raises(UnknownOrderError):
            use_case(999)


def test_stock_info_never_goes_below_zero(loms: InMemoryLoms) -> None:
    loms.put_stock(139818428, total_count=100, reserved=101)
    assert loms.service.stock_info(139818428) == 0
    with pytest.raises(UnknownSkuError):
        loms.service.stock_info(404)


def test_status_table_forbids_moves_back() -> None:
    order = Order(1, USER, OrderStatus.PAID, (Item(1, 1),))
    for target in OrderStatus:
        with pytest.raises(IllegalStatusChangeError):
            order.moved_to(target)
    assert Order(1, USER, OrderStatus.NEW, ()).moved_to(OrderStatus.FAILED).status is OrderStatus.FAILED


def test_merge_items_sorts_and_adds() -> None:
    assert merge_items([Item(3, 1), Item(1, 2), Item(3, 4)]) == (Item(1, 2), Item(3, 5))
