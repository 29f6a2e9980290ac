"""Stateful in-memory stand-ins for the loms ports, with the same behaviour as the PostgreSQL adapters.

One lock serialises every unit of work, and a unit that ends in an exception restores the state it started
from, so the fakes are transactional. tests/integration/loms/test_ports.py runs one behavioural suite against
these fakes and the real adapters, so the two cannot drift.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from functions.loms import bootstrap as composition
from functions.loms.domain import (
    InsufficientStockError,
    Item,
    Order,
    OrderStatus,
    OrderStatusChanged,
    StockLevel,
)
from functions.loms.ports import EventPublisher
from functions.loms.service import LomsService, OutboxRelay, StaleOrderSweeper, place_in
from functions.loms.settings import LomsSettings
from shared_lib.errors import TransientError
from shared_lib.events import Event
from shared_lib.web import IdempotencyStore


@dataclass
class LomsState:
    orders: dict[int, Order] = field(default_factory=dict)
    stock: dict[int, StockLevel] = field(default_factory=dict)
    reservations: dict[int, dict[int, int]] = field(default_factory=dict)  # order id -> sku -> count
    last_order_id: int = 0
    status_changes: list[tuple[int, OrderStatus]] = field(default_factory=list)
    now: datetime = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)  # the fake clock; `advance` moves it
    changed_at: dict[int, datetime] = field(default_factory=dict)  # order id -> its last status change
    reserved_at: dict[int, datetime] = field(default_factory=dict)  # order id -> when it reserved
    outbox: list[OrderStatusChanged] = field(default_factory=list)
    sent: dict[int, datetime] = field(default_factory=dict)  # event id -> when it was marked sent
    last_event_id: int = 0  # ids are never reused, even once pruned

    def record(self, order: Order) -> None:
        """The outbox row of a change, in the same unit (so a unit that fails takes it back)."""
        self.now += timedelta(microseconds=1)  # distinct, ordered moments, as clock_timestamp() gives
        self.last_event_id += 1
        event_id = self.last_event_id
        change = OrderStatusChanged(event_id, order.order_id, order.user_id, order.status, self.now)
        self.outbox.append(change)
        self.changed_at[order.order_id] = self.now


class InMemoryOrderRepository:
    def __init__(self, state: LomsState) -> None:
        self.state = state

    def add(self, user_id: int, items: tuple[Item, ...]) -> Order:
        self.state.last_order_id += 1
        order = Order(self.state.last_order_id, user_id, OrderStatus.NEW, items)
        self.state.orders[order.order_id] = order
        self.state.record(order)
        return order

    def get_for_update(self, order_id: int) -> Order | None:
        return self.state.orders.get(order_id)

    def change_status(self, order: Order, status: OrderStatus) -> Order:
        changed = order.moved_to(status)
        self.state.orders[order.order_id] = changed
        self.state.status_changes.append((order.order_id, status))
        self.state.record(changed)
        return changed

    def next_stale(self, older_than: timedelta) -> Order | None:
        cutoff = self.state.now - older_than
        open_orders = [
            (self.state.changed_at[o.order_id], o.order_id)
            for o in self.state.orders.values()
            if o.status in (OrderStatus.NEW, OrderStatus.AWAITING_PAYMENT)
            and self.state.changed_at[o.order_id] < cutoff
        ]
        return self.state.orders[min(open_orders)[1]] if open_orders else None


class InMemoryStockRepository:
    def __init__(self, state: LomsState) -> None:
        self.state = state

    def reserve(self, order_id: int, items: tuple[Item, ...]) -> None:
        for item in items:
            level = self.state.stock.get(item.sku)
            if level is None or level.total_count - level.reserved < item.count:
                raise InsufficientStockError(item.sku, item.count, None if level is None else level.available)
        held = self.state.reservations.setdefault(order_id, {})
        self.state.reserved_at.setdefault(order_id, self.state.now)
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

    shard_count = 1

    def for_new_order(self, user_id: int) -> contextlib.AbstractContextManager[InMemoryOrderUnit]:
        return self._unit()

    def for_order(self, order_id: int) -> contextlib.AbstractContextManager[InMemoryOrderUnit]:
        return self._unit()

    def for_shard(self, index: int) -> contextlib.AbstractContextManager[InMemoryOrderUnit]:
        if index != 0:
            raise ValueError(f"no shard {index} of 1")
        return self._unit()

    def place_order(
        self, user_id: int, items: tuple[Item, ...]
    ) -> tuple[Order, InsufficientStockError | None]:
        with self._unit() as unit:
            return place_in(unit, user_id, items)

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


class Claims:
    """Per-shard try-locks shared by every relay or sweeper of one fake world, as advisory locks are."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claim(self, shard: int) -> Iterator[bool]:
        with self._lock:
            mine = shard not in self._held
            self._held.add(shard)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._held.discard(shard)


class InMemorySweepCoordinator:
    def __init__(self, state: LomsState, lock: threading.RLock, claims: Claims) -> None:
        self.state = state
        self.lock = lock
        self.claims = claims

    def claim(self, shard: int) -> contextlib.AbstractContextManager[bool]:
        return self.claims.claim(shard)

    def orphaned_reservations(self, older_than: timedelta, limit: int) -> list[int]:
        with self.lock:
            cutoff = self.state.now - older_than
            return sorted(
                order_id
                for order_id, held in self.state.reservations.items()
                if held and order_id not in self.state.orders and self.state.reserved_at[order_id] < cutoff
            )[:limit]

    def prune_sent_events(self, shard: int, older_than: timedelta, limit: int) -> int:
        with self.lock:
            cutoff = self.state.now - older_than
            old = sorted((at, event_id) for event_id, at in self.state.sent.items() if at < cutoff)[:limit]
            gone = {event_id for _, event_id in old}
            self.state.outbox = [e for e in self.state.outbox if e.event_id not in gone]
            for event_id in gone:
                del self.state.sent[event_id]
            return len(gone)


class InMemoryOutbox:
    """The world's outbox as one relay sees it: claims shared with the other relays of the world, a wait
    that wakes when events were added since this relay last looked."""

    shard_count = 1

    def __init__(self, state: LomsState, lock: threading.RLock, claims: Claims) -> None:
        self.state = state
        self.lock = lock
        self.claims = claims
        self._seen = 0
        self.closed = False

    def claim(self, shard: int) -> contextlib.AbstractContextManager[bool]:
        return self.claims.claim(shard)

    def pending(self, shard: int, limit: int) -> list[OrderStatusChanged]:
        with self.lock:
            self._seen = self.state.last_event_id
            return [e for e in self.state.outbox if e.event_id not in self.state.sent][:limit]

    def mark_sent(self, shard: int, event_ids: Sequence[int]) -> None:
        with self.lock:
            for event_id in event_ids:
                self.state.sent.setdefault(event_id, self.state.now)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.state.last_event_id > self._seen:
                    self._seen = self.state.last_event_id
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.005, timeout))

    def close(self) -> None:
        self.closed = True


class RecordingPublisher:
    """Keeps what it was given, like a topic; `failing` makes every publish a TransientError, and
    `fail_after_sending` delivers a batch and then fails (a relay that dies before it can mark)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Event]] = []
        self.failing = False
        self.fail_after_sending = 0  # how many more publishes deliver and then raise
        self.attempts = 0
        self.lock = threading.Lock()

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        with self.lock:
            self.attempts += 1
            if self.failing:
                raise TransientError("the fake transport is down")
            self.published.extend((topic, event) for event in events)
            if self.fail_after_sending:
                self.fail_after_sending -= 1
                raise TransientError("delivered, then the relay died")

    def events(self) -> list[Event]:
        with self.lock:
            return [event for _, event in self.published]


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
        self.relay_claims = Claims()
        self.sweep_claims = Claims()
        self.coordinator = InMemorySweepCoordinator(self.state, self.lock, self.sweep_claims)

    def bootstrap(
        self,
        settings: LomsSettings | None = None,
        *,
        idempotency: IdempotencyStore | None = None,
        publisher: EventPublisher | None = None,
    ) -> composition.Root:
        """loms' composition root on these fakes, made the one its handlers use (`reset()` after)."""
        return composition.bootstrap(
            settings,
            units=self.units,
            orders=self.service.orders,
            stock=self.service.stock,
            idempotency=idempotency,
            outbox=self.outbox,
            publisher=publisher,
            coordinator=self.coordinator,
        )

    def user(self, base: int) -> int:  # any user id will do: the fakes have no shards
        return base

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.state.now += timedelta(seconds=seconds)

    def outbox(self) -> InMemoryOutbox:
        return InMemoryOutbox(self.state, self.lock, self.relay_claims)

    def relay(
        self, publisher: RecordingPublisher, batch_size: int = 1000, poll_seconds: float = 0.05
    ) -> OutboxRelay:
        return OutboxRelay(
            self.outbox(), publisher, batch_size=batch_size, poll_seconds=poll_seconds, linger_seconds=0
        )

    def sweeper(
        self,
        older_than: float = 600,
        batch_size: int = 500,
        retention: float | None = None,
        prune_batch: int = 10_000,
    ) -> StaleOrderSweeper:
        kept = None if retention is None else timedelta(seconds=retention)
        return StaleOrderSweeper(
            self.units, self.coordinator, timedelta(seconds=older_than), batch_size, kept, prune_batch
        )

    def events(self) -> list[OrderStatusChanged]:
        with self.lock:
            return list(self.state.outbox)

    def statuses_of(self, order_id: int) -> list[OrderStatus]:
        return [e.status for e in self.events() if e.order_id == order_id]

    def unsent(self) -> list[int]:
        with self.lock:
            return [e.event_id for e in self.state.outbox if e.event_id not in self.state.sent]

    def orphan(self, order_id: int, sku: int, count: int) -> None:
        """Reservations of an order that was never stored: what a create leaves that died between commits."""
        with self.lock:
            self.state.reservations[order_id] = {sku: count}
            self.state.reserved_at[order_id] = self.state.now
            level = self.state.stock[sku]
            self.state.stock[sku] = StockLevel(sku, level.total_count, level.reserved + count)

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
