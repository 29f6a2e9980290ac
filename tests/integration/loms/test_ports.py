"""One behavioural suite for the loms ports, run against the in-memory fakes and the PostgreSQL adapters.

What the service relies on from a unit of work: it commits as one, rolls back as one (also across shards),
a refused reservation leaves the unit usable and nothing reserved, and settling twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pytest

from functions.loms.domain import (
    IllegalStatusChangeError,
    InsufficientStockError,
    Item,
    OrderStatus,
    StockLevel,
)
from functions.loms.ports import UnitOfWork
from functions.loms.service import LomsService
from tests.integration.loms.conftest import PgLoms
from tests.unit.loms.fakes import InMemoryLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]


class World(Protocol):
    service: LomsService

    @property
    def units(self) -> UnitOfWork: ...

    def user(self, base: int) -> int: ...

    def put_stock(self, sku: int, total_count: int, reserved: int = 0) -> None: ...

    def level(self, sku: int) -> StockLevel | None: ...

    def reservations(self, order_id: int) -> dict[int, int]: ...

    def statuses_of(self, order_id: int) -> list[OrderStatus]: ...


class Boom(Exception):
    pass


@pytest.fixture(params=["in-memory", "pg-1-shard", "pg-2-shards-order-with-stock", "pg-2-shards-order-apart"])
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "in-memory":
        return InMemoryLoms()
    if request.param == "pg-1-shard":
        return PgLoms(request.getfixturevalue("one_shard"))
    return PgLoms(request.getfixturevalue("two_shards"), home_shard=0 if "with-stock" in request.param else 1)


def test_a_unit_commits_orders_and_stock_together(world: World, unique_id: UniqueId) -> None:
    user, sku = world.user(unique_id()), unique_id()
    world.put_stock(sku, 10)
    with world.units.for_new_order(user) as unit:
        order = unit.orders.add(user, (Item(sku, 2),))
        assert order.status is OrderStatus.NEW
        assert unit.orders.get_for_update(order.order_id) == order
        unit.stock.reserve(order.order_id, order.items)
        unit.orders.change_status(order, OrderStatus.AWAITING_PAYMENT)
    assert world.service.order_info(order.order_id).status is OrderStatus.AWAITING_PAYMENT
    assert world.reservations(order.order_id) == {sku: 2}


def test_a_unit_that_raises_leaves_nothing_behind(world: World, unique_id: UniqueId) -> None:
    user, sku = world.user(unique_id()), unique_id()
    world.put_stock(sku, 10)
    with pytest.raises(Boom), world.units.for_new_order(user) as unit:
        order = unit.orders.add(user, (Item(sku, 2),))
        unit.stock.reserve(order.order_id, order.items)
        raise Boom
    assert world.level(sku) == StockLevel(sku, 10, 0)
    assert world.reservations(order.order_id) == {}
    with world.units.for_order(order.order_id) as unit:
        assert unit.orders.get_for_update(order.order_id) is None


def test_a_raising_unit_undoes_a_release_too(world: World, unique_id: UniqueId) -> None:
    user, sku = world.user(unique_id()), unique_id()
    world.put_stock(sku, 10)
    order_id = world.service.create_order(user, [Item(sku, 3)])
    with pytest.raises(Boom), world.units.for_order(order_id) as unit:
        order = unit.orders.get_for_update(order_id)
        assert order is not None
        unit.stock.release(order_id)
        unit.orders.change_status(order, OrderStatus.CANCELLED)
        raise Boom
    assert world.service.order_info(order_id).status is OrderStatus.AWAITING_PAYMENT
    assert world.level(sku) == StockLevel(sku, 10, 3)
    assert world.reservations(order_id) == {sku: 3}


def test_a_refused_reservation_reserves_nothing_and_the_unit_goes_on(
    world: World, unique_id: UniqueId
) -> None:
    user, a, b = world.user(unique_id()), unique_id(), unique_id()
    world.put_stock(a, 10)
    world.put_stock(b, 1)
    with world.units.for_new_order(user) as unit:
        order = unit.orders.add(user, (Item(a, 5), Item(b, 2)))
        with pytest.raises(InsufficientStockError) as refused:
            unit.stock.reserve(order.order_id, order.items)
        assert (refused.value.sku, refused.value.wanted, refused.value.available) == (b, 2, 1)
        unit.stock.reserve(order.order_id, (Item(a, 1),))
        unit.orders.change_status(order, OrderStatus.AWAITING_PAYMENT)
    assert world.level(a) == StockLevel(a, 10, 1)
    assert world.level(b) == StockLevel(b, 1, 0)
    assert world.reservations(order.order_id) == {a: 1}


def test_place_order_reserves_every_item_or_stores_a_failed_order_holding_nothing(
    world: World, unique_id: UniqueId
) -> None:
    user, a, b, unknown = world.user(unique_id()), unique_id(), unique_id(), unique_id()
    world.put_stock(a, 10, 3)
    world.put_stock(b, 5)
    placed, refused = world.units.place_order(user, (Item(a, 7), Item(b, 5)))
    assert refused is None
    assert (placed.user_id, placed.status, placed.items) == (
        user,
        OrderStatus.AWAITING_PAYMENT,
        (Item(a, 7), Item(b, 5)),
    )
    assert world.service.order_info(placed.order_id) == placed
    assert world.reservations(placed.order_id) == {a: 7, b: 5}
    assert (world.level(a), world.level(b)) == (StockLevel(a, 10, 10), StockLevel(b, 5, 5))
    assert world.statuses_of(placed.order_id) == [OrderStatus.NEW, OrderStatus.AWAITING_PAYMENT]

    world.put_stock(b, 6, 5)
    for items, short, available in (
        ((Item(a, 1), Item(b, 1)), a, 0),  # the first short SKU is named, and nothing else is taken
        ((Item(b, 1), Item(unknown, 1)), unknown, None),  # no stock record
        ((Item(b, 2),), b, 1),
    ):
        failed, refused = world.units.place_order(user, items)
        assert refused is not None
        assert (refused.order_id, refused.sku, refused.available) == (failed.order_id, short, available)
        assert refused.wanted == next(item.count for item in items if item.sku == short)
        assert (failed.status, failed.items) == (OrderStatus.FAILED, items)
        assert world.service.order_info(failed.order_id) == failed
        assert world.reservations(failed.order_id) == {}
        assert world.statuses_of(failed.order_id) == [OrderStatus.NEW, OrderStatus.FAILED]
    assert (world.level(a), world.level(b)) == (StockLevel(a, 10, 10), StockLevel(b, 6, 5))


def test_settling_twice_changes_nothing(world: World, unique_id: UniqueId) -> None:
    user, sku = world.user(unique_id()), unique_id()
    world.put_stock(sku, 10, 1)
    paid = world.service.create_order(user, [Item(sku, 2)])
    cancelled = world.service.create_order(user, [Item(sku, 3)])
    for _ in range(2):
        with world.units.for_order(paid) as unit:
            unit.stock.consume(paid)
        with world.units.for_order(cancelled) as unit:
            unit.stock.release(cancelled)
    assert world.level(sku) == StockLevel(sku, 8, 1)


def test_the_status_table_guards_change_status(world: World, unique_id: UniqueId) -> None:
    user, sku = world.user(unique_id()), unique_id()
    world.put_stock(sku, 10)
    order_id = world.service.create_order(user, [Item(sku, 1)])
    with world.units.for_order(order_id) as unit:
        order = unit.orders.get_for_update(order_id)
        assert order is not None
        with pytest.raises(IllegalStatusChangeError):
            unit.orders.change_status(order, OrderStatus.FAILED)
    assert world.service.order_info(order_id).status is OrderStatus.AWAITING_PAYMENT


def test_a_unit_for_an_unknown_order_finds_nothing(world: World, unique_id: UniqueId) -> None:
    missing = unique_id() * 1000
    with world.units.for_order(missing) as unit:
        assert unit.orders.get_for_update(missing) is None
        unit.stock.release(missing)
        unit.stock.consume(missing)


def test_changes_write_their_events_and_a_failed_unit_writes_none(world: World, unique_id: UniqueId) -> None:
    user, sku = world.user(unique_id()), unique_id()
    world.put_stock(sku, 10)
    with world.units.for_new_order(user) as unit:
        order = unit.orders.add(user, (Item(sku, 1),))
        unit.orders.change_status(order, OrderStatus.AWAITING_PAYMENT)
    assert world.statuses_of(order.order_id) == [OrderStatus.NEW, OrderStatus.AWAITING_PAYMENT]
    with pytest.raises(Boom), world.units.for_order(order.order_id) as unit:
        locked = unit.orders.get_for_update(order.order_id)
        assert locked is not None
        unit.orders.change_status(locked, OrderStatus.PAID)
        raise Boom
    assert world.statuses_of(order.order_id) == [OrderStatus.NEW, OrderStatus.AWAITING_PAYMENT]
