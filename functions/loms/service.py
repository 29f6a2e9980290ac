"""loms use cases: create, pay and cancel orders against the stock, read orders and stock levels, cancel
stale orders, and relay the outbox of status events to the event transport.

No Flask, no SQL, no Kafka, no environment here: transactions come from the UnitOfWork port, events leave
through the Outbox and EventPublisher ports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from functions.loms.domain import (
    InsufficientStockError,
    Item,
    Order,
    OrderStatus,
    OrderStatusChanged,
    UnknownOrderError,
    UnknownSkuError,
    merge_items,
)
from functions.loms.ports import (
    EventPublisher,
    OrderReader,
    OrderUnit,
    Outbox,
    StockReader,
    SweepCoordinator,
    UnitOfWork,
)
from shared_lib.errors import TransientError
from shared_lib.events import Event, PartialPublishError, rfc3339
from shared_lib.retry import Backoff

log = logging.getLogger(__name__)

ORDER_EVENTS_TOPIC = "loms.order-events"
ORPHAN_GRACE = timedelta(minutes=1)
EVENT_SOURCE = "/loms"
EVENT_TYPE = "loms.order.status-changed"


@dataclass(frozen=True, slots=True)
class LomsService:
    units: UnitOfWork
    orders: OrderReader
    stock: StockReader

    def create_order(self, user_id: int, items: Iterable[Item]) -> int:
        """Store the order and reserve all its items, or none; returns the order id.

        Raises EmptyOrderError, ItemCountOutOfRangeError, InsufficientStockError (the order is then stored as
        `failed`, nothing reserved), TransientError.
        """
        order, refused = self.units.place_order(user_id, merge_items(items))
        if refused is not None:  # raised only after the commit: the failed order must stay stored
            raise refused
        return order.order_id

    def order_info(self, order_id: int) -> Order:
        """Raises UnknownOrderError, TransientError."""
        order = self.orders.get(order_id)
        if order is None:
            raise UnknownOrderError(order_id)
        return order

    def pay_order(self, order_id: int) -> None:
        """Sell the reserved stock and mark the order paid; paying a paid order changes nothing.

        Raises UnknownOrderError, OrderNotPayableError, TransientError.
        """
        with self.units.for_order(order_id) as unit:
            order = unit.orders.get_for_update(order_id)
            if order is None:
                raise UnknownOrderError(order_id)
            if order.needs_payment():
                unit.stock.consume(order_id)
                unit.orders.change_status(order, OrderStatus.PAID)

    def cancel_order(self, order_id: int) -> None:
        """Release the reserved stock and mark the order cancelled; cancelling it again changes nothing.

        Raises UnknownOrderError, OrderNotCancellableError, TransientError.
        """
        with self.units.for_order(order_id) as unit:
            order = unit.orders.get_for_update(order_id)
            if order is None:
                raise UnknownOrderError(order_id)
            cancel_in(unit, order)

    def stock_info(self, sku: int) -> int:
        """What can still be ordered: total minus reserved, never below 0.

        Raises UnknownSkuError, TransientError.
        """
        level = self.stock.get(sku)
        if level is None:
            raise UnknownSkuError(sku)
        return level.available


def place_in(
    unit: OrderUnit, user_id: int, items: tuple[Item, ...]
) -> tuple[Order, InsufficientStockError | None]:
    """The one create path, step by step inside `unit` (what UnitOfWork.place_order does): store the order,
    reserve all its items or none, and move it to `awaiting payment`, or to `failed` with the refusal (naming
    the order) returned, not raised: the unit must commit the failed order."""
    order = unit.orders.add(user_id, items)
    try:
        unit.stock.reserve(order.order_id, order.items)
    except InsufficientStockError as exc:
        return unit.orders.change_status(order, OrderStatus.FAILED), exc.of_order(order.order_id)
    return unit.orders.change_status(order, OrderStatus.AWAITING_PAYMENT), None


def cancel_in(unit: OrderUnit, order: Order) -> bool:
    """The one cancel path: release the reservation and mark the order cancelled, inside `unit`, which must
    hold the order's row lock. False when it was cancelled already; raises OrderNotCancellableError."""
    if not order.needs_cancelling():
        return False
    unit.stock.release(order.order_id)
    unit.orders.change_status(order, OrderStatus.CANCELLED)
    return True


# --- the stale-order sweep ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepReport:
    cancelled: int  # orders moved to `cancelled` (their stock released, their event written)
    orphans_released: int  # reservations of orders that were never stored, given back
    busy_shards: int  # shards another sweeper was working on, skipped
    events_pruned: int = 0  # sent outbox events older than the retention, deleted


@dataclass(frozen=True, slots=True)
class StaleOrderSweeper:
    """Cancels orders left open for longer than `older_than`, frees reservations no order owns, and deletes
    outbox events sent longer than `retention` ago (None: kept forever), `prune_batch` a shard a run at most.

    Many replicas may fire at once: each shard is swept by one of them at a time (the others skip it at once),
    every order is cancelled in its own short unit through the one cancel path (row lock, status check), and
    orders another unit holds are skipped, so nothing is cancelled twice and nobody queues on the database.
    """

    units: UnitOfWork
    coordinator: SweepCoordinator
    older_than: timedelta
    batch_size: int = 500  # at most this many orders per shard, and orphans in all, per run
    retention: timedelta | None = None
    prune_batch: int = 10_000

    def run(self) -> SweepReport:
        """Raises TransientError when the database fails; what was done until then stays done."""
        cancelled = orphans = busy = pruned = 0
        for shard in range(self.units.shard_count):
            with self.coordinator.claim(shard) as mine:
                if not mine:
                    busy += 1
                    continue
                cancelled += self._sweep(shard)
                if shard == 0:  # the stock lives in shard 0: its sweeper also frees orphaned reservations
                    orphans = self._release_orphans()
                if self.retention is not None:
                    gone = self.coordinator.prune_sent_events(shard, self.retention, self.prune_batch)
                    if gone:
                        log.info("pruned %d sent events from the outbox of shard %d", gone, shard)
                    pruned += gone
        return SweepReport(cancelled, orphans, busy, pruned)

    def _sweep(self, shard: int) -> int:
        cancelled = 0
        for _ in range(self.batch_size):
            with self.units.for_shard(shard) as unit:
                order = unit.orders.next_stale(self.older_than)
                if order is None:
                    break
                if cancel_in(unit, order):  # always, for an open order; the check stays in one place
                    cancelled += 1
                    log.info("cancelled stale order %s (was %s)", order.order_id, order.status.value)
        return cancelled

    def _release_orphans(self) -> int:
        released = 0
        # Never younger than ORPHAN_GRACE, whatever the stale window: a create in flight has its reservations
        # committed a moment before its order.
        grace = max(self.older_than, ORPHAN_GRACE)
        for order_id in self.coordinator.orphaned_reservations(grace, self.batch_size):
            with self.units.for_order(order_id) as unit:
                if unit.orders.get_for_update(order_id) is None:  # still no order: its create died
                    unit.stock.release(order_id)
                    released += 1
                    log.warning("released the reservations of order %s, which was never stored", order_id)
        return released


# --- the outbox relay ---------------------------------------------------------------------------------


# json.dumps with separators builds a new encoder at every call; the relay encodes every event it publishes
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def cloudevent(change: OrderStatusChanged) -> Event:
    """The CloudEvent of one status change: id = the outbox row's id, key = the order id (its partition)."""
    payload = {
        "order_id": change.order_id,
        "user_id": change.user_id,
        "status": change.status.value,
        "moment": rfc3339(change.moment),
    }
    return Event(
        id=str(change.event_id),
        source=EVENT_SOURCE,
        type=EVENT_TYPE,
        data=_compact_json(payload).encode(),
        time=change.moment,
        key=str(change.order_id).encode(),
        traceparent=change.traceparent,
    )


def acknowledged_prefixes(batch: Iterable[OrderStatusChanged], acknowledged: frozenset[str]) -> list[int]:
    """The ids to mark sent after a partial publish: per order, its events up to (not including) its first
    unacknowledged one. A later event of that order stays unsent even if acknowledged, so the next publish
    sends it after the one it follows, never leaving it marked ahead of a gap."""
    blocked: set[int] = set()
    done: list[int] = []
    for change in batch:
        if change.order_id in blocked:
            continue
        if str(change.event_id) in acknowledged:
            done.append(change.event_id)
        else:
            blocked.add(change.order_id)
    return done


@dataclass(frozen=True, slots=True)
class RelayReport:
    published: int
    failure: Exception | None = None  # the last attempt's error, when the run ended on one


@dataclass
class OutboxRelay:
    """Publishes outbox events after their commit, in order per order, marking them sent only once the
    transport acknowledged them; never inside a transaction. A relay that dies between publishing and marking
    causes duplicates of that batch (same ce_id), never a loss; consumers deduplicate by ce_id. A publish that
    fails part-way (PartialPublishError) marks what the transport acknowledged, per order up to its first
    unacknowledged event, so a transport outage leaves no duplicates behind.

    Why order holds with several relays: a relay reads a shard's unsent events in id order and publishes them
    in that order; an event is unsent only while every earlier event of its order is unsent too or already
    acknowledged. So every copy of an event follows a copy of each earlier event of its order. The per-shard
    claim only keeps relays from doing the same work twice.

    One relay per thread (the Outbox holds connections).
    """

    outbox: Outbox
    publisher: EventPublisher
    batch_size: int = 1000
    poll_seconds: float = 1.0  # the fallback when a notification is missed (or never sent)
    linger_seconds: float = 5.0  # how long `linger` keeps relaying after its first drain
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.1, max=5.0))
    clock: Callable[[], float] = time.monotonic
    topic: str = ORDER_EVENTS_TOPIC
    # `clock` time of the loop's latest pass (None: not started); a liveness probe reads it
    last_pass: float | None = field(default=None, init=False)

    def drain(self, enough: Callable[[], bool] = lambda: False) -> int:
        """Publish what is pending in every shard this relay can claim; returns how many were published.
        `enough()` is asked after each batch: under a steady inflow a shard is never empty for long.

        A failing shard does not hold up the others; its first error is raised once all had their turn.
        """
        published = 0
        failure: TransientError | None = None
        for shard in range(self.outbox.shard_count):
            try:
                published += self._drain_shard(shard, enough)
            except TransientError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return published

    def _drain_shard(self, shard: int, enough: Callable[[], bool]) -> int:
        published = 0
        with self.outbox.claim(shard) as mine:
            if not mine:
                return 0
            while True:
                batch = self.outbox.pending(shard, self.batch_size)
                if not batch:
                    break
                try:
                    self.publisher.publish(self.topic, [cloudevent(change) for change in batch])
                except PartialPublishError as exc:
                    # what the broker has is not published again; an order's events after one it lacks wait
                    done = acknowledged_prefixes(batch, exc.acknowledged)
                    if done:
                        self.outbox.mark_sent(shard, done)
                    raise
                self.outbox.mark_sent(shard, [change.event_id for change in batch])
                published += len(batch)
                if len(batch) < self.batch_size or enough():
                    break
        return published

    def run_until(self, stop: threading.Event, deadline: float | None = None) -> RelayReport:
        """Drain, wait for new events (a notification, or `poll_seconds` at most), repeat, until `stop` is set
        or the `clock` passes `deadline`; always drains at least once. Failures (and bugs, logged with their
        traceback) back off and retry; rows stay in the outbox meanwhile. `stop` is noticed within
        `poll_seconds`.
        """
        published = failures = 0
        failure: Exception | None = None

        def enough() -> bool:
            return stop.is_set() or (deadline is not None and self.clock() >= deadline)

        while True:
            self.last_pass = self.clock()
            try:
                published += self.drain(enough)
                failure, failures = None, 0
            except TransientError as exc:
                failure, failures = exc, failures + 1
                log.warning("relaying the outbox failed (attempt %d): %s", failures, exc.message)
            except Exception as exc:  # a bug: the loop must outlive it, and say so loudly
                failure, failures = exc, failures + 1
                log.exception("relaying the outbox crashed (attempt %d)", failures)
            if stop.is_set():
                break
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                break
            pause = self.backoff.delay(failures) if failures else self.poll_seconds
            pause = pause if remaining is None else min(pause, remaining)
            if failures:
                if stop.wait(pause):
                    break
            else:
                self.outbox.wait(pause)
        return RelayReport(published, failure)

    def linger(self) -> RelayReport:
        """What one cron call does: drain, then keep relaying as events arrive for `linger_seconds`."""
        return self.run_until(threading.Event(), deadline=self.clock() + self.linger_seconds)

    def close(self) -> None:
        self.outbox.close()
