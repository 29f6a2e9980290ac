"""Stateful in-memory stand-ins for the loms ports, with the same behaviour as the PostgreSQL adapters.

One lock serialises every unit of work, and a unit that ends in an exception restores the state it started
from, so the fakes are transactional. tests/integration/loms/test_ports.py runs one behavioural suite against
these fakes and the real adapters, so the two cannot drift.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from functions.loms.domain import InsufficientStockError, Item, Order, OrderStatus, StockLevel
from functions.loms.service import LomsService
from shared_lib import web
from shared_lib.errors import IdempotencyKeyReusedError


@dataclass
class LomsState:
    orders: dict[int, Order] = field(default_factory=dict)
    stock: dict[int, StockLevel] = field(default_factory=dict)
    reservations: dict[int, dict[int, int]] = field(default_factory=dict)  # order id -> sku -> count
    last_order_id: int = 0
    status_changes: list[tuple[int, OrderStatus]] = field(default_factory=list)


class InMemoryOrderRepository:
    def __init__(self, state: LomsState) -> None:
        self.state = state

    def add(self, user_id: int, items: tuple[Item, ...]) -> Order:
        self.state.last_order_id += 1
        order = Order(self.state.last_order_id, user_id, OrderStatus.NEW, items)
        self.state.orders[order.order_id] = order
        return order

    def get_for_update(self, order_id: int) -> Order | None:
        return self.state.orders.get(order_id)

    def change_status(self, order: Order, status: OrderStatus) -> Order:
        changed = order.moved_to(status)
        self.state.orders[order.order_id] = changed
        self.state.status_changes.append((order.order_id, status))
        return changed


class InMemoryStockRepository:
    def __init__(self, state: LomsState) -> None:
        self.state = state

    def reserve(self, order_id: int, items: tuple[Item, ...]) -> None:
        for item in items:
            level = self.state.stock.get(item.sku)
            if level is None or level.total_count - level.reserved < item.count:
                raise InsufficientStockError(item.sku, item.count, None if level is None else level.available)
        held = self.state.reservations.setdefault(order_id, {})
        for item in items:
            level = self.state.stock[item.sku]
            self.state.stock[item.sku] = StockLevel(item.sku, level.total_count, level.reserved + item.count)
            held[item.sku] = held.get(item.sku, 0) + item.count

    def consume(self, order_id: int) -> None:
        for sku, count in self.state.reservations.pop(order_id, {}).items():
            level = self.state.stock[sku]
            self.state.stock[sku] = StockLevel(sku, level.total_count - count, level.reserved - count)

    def release(self, order_id: int) -> None:
        for sku, count in self.state.reservations.pop(order_id, {}).items():
            level = self.state.stock[sku]
            self.state.stock[sku] = StockLevel(sku, level.total_count, level.reserved - count)


@dataclass(frozen=True, slots=True)
class InMemoryOrderUnit:
    orders: InMemoryOrderRepository
    stock: InMemoryStockRepository


class InMemoryUnitOfWork:
    def __init__(self, state: LomsState, lock: threading.RLock) -> None:
        self.state = state
        self.lock = lock

    def for_new_order(self, user_id: int) -> contextlib.AbstractContextManager[InMemoryOrderUnit]:
        return self._unit()

    def for_order(self, order_id: int) -> contextlib.AbstractContextManager[InMemoryOrderUnit]:
        return self._unit()

    @contextlib.contextmanager
    def _unit(self) -> Iterator[InMemoryOrderUnit]:
        with self.lock:
            saved = copy.deepcopy(self.state.__dict__)
            try:
                yield InMemoryOrderUnit(
                    InMemoryOrderRepository(self.state), InMemoryStockRepository(self.state)
                )
            except BaseException:
                self.state.__dict__.update(saved)
                raise


class InMemoryOrderReader:
    def __init__(self, state: LomsState, lock: threading.RLock) -> None:
        self.state = state
        self.lock = lock

    def get(self, order_id: int) -> Order | None:
        with self.lock:
            return self.state.orders.get(order_id)


class InMemoryStockReader:
    def __init__(self, state: LomsState, lock: threading.RLock) -> None:
        self.state = state
        self.lock = lock

    def get(self, sku: int) -> StockLevel | None:
        with self.lock:
            return self.state.stock.get(sku)


class InMemoryLoms:
    """The fakes wired together, plus what a test needs to arrange and inspect the state."""

    def __init__(self) -> None:
        self.state = LomsState()
        self.lock = threading.RLock()
        self.units = InMemoryUnitOfWork(self.state, self.lock)
        self.service = LomsService(
            units=self.units,
            orders=InMemoryOrderReader(self.state, self.lock),
            stock=InMemoryStockReader(self.state, self.lock),
        )

    def user(self, base: int) -> int:  # any user id will do: the fakes have no shards
        return base

    def put_stock(self, sku: int, total_count: int, reserved: int = 0) -> None:
        with self.lock:
            self.state.stock[sku] = StockLevel(sku, total_count, reserved)

    def level(self, sku: int) -> StockLevel | None:
        with self.lock:
            return self.state.stock.get(sku)

    def reservations(self, order_id: int) -> dict[int, int]:
        with self.lock:
            return dict(self.state.reservations.get(order_id, {}))

    def order_count(self) -> int:
        with self.lock:
            return len(self.state.orders)


class InMemoryIdempotencyStore:
    """Remembers non-5xx replies per (scope, key), as PgIdempotencyStore does."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], tuple[str, web.Reply]] = {}
        self.lock = threading.Lock()

    def run(self, scope: str, key: str, fingerprint: str, action: Callable[[], web.Reply]) -> web.Reply:
        with self.lock:
            stored = self.replies.get((scope, key))
            if stored is not None:
                if stored[0] != fingerprint:
                    raise IdempotencyKeyReusedError("this Idempotency-Key was used with a different request")
                return stored[1]
            reply = action()
            if reply.status < 500:
                self.replies[(scope, key)] = (fingerprint, reply)
            return reply
