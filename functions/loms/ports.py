"""What the loms service needs from the outside world: units of work over orders and stock, stale reads,
the outbox of status events with a way to publish them, and coordination of the stale-order sweep.

Protocols only. A unit of work is the transaction boundary: what happens inside one commits or rolls back
as one (see adapters/pg_unit_of_work.py for how that holds when an order and the stock live in different
databases).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Protocol

from functions.loms.domain import (
    InsufficientStockError,
    Item,
    Order,
    OrderStatus,
    OrderStatusChanged,
    StockLevel,
)
from shared_lib.events import Event


class OrderRepository(Protocol):
    def add(self, user_id: int, items: tuple[Item, ...]) -> Order:
        """Store a new order with a fresh id and status `new`; `items` are merged and sorted.

        Creation is not a status change, but it does record the first status: the `new` event belongs here.
        """
        ...

    def get_for_update(self, order_id: int) -> Order | None:
        """The order, locked against other units until this one ends; None: no such order."""
        ...

    def change_status(self, order: Order, status: OrderStatus) -> Order:
        """The one way an order's status changes; the change's outbox event belongs here, in the same unit.

        Raises IllegalStatusChangeError when the status table forbids the move.
        """
        ...

    def next_stale(self, older_than: timedelta) -> Order | None:
        """The open order (`new` or `awaiting payment`) unchanged for longer than `older_than`, oldest first,
        that no other unit holds (those are skipped, not waited for); locked until this unit ends. None: none.
        """
        ...


class StockRepository(Protocol):
    def reserve(self, order_id: int, items: tuple[Item, ...]) -> None:
        """Reserve every item for the order, or none; raises InsufficientStockError naming a short SKU."""
        ...

    def consume(self, order_id: int) -> None:
        """Turn the order's reservations into a sale (total and reserved drop); none left: nothing happens."""
        ...

    def release(self, order_id: int) -> None:
        """Give the order's reservations back (reserved drops); none left: nothing happens."""
        ...


class OrderUnit(Protocol):
    @property
    def orders(self) -> OrderRepository: ...

    @property
    def stock(self) -> StockRepository: ...


class UnitOfWork(Protocol):
    @property
    def shard_count(self) -> int: ...

    def for_new_order(self, user_id: int) -> AbstractContextManager[OrderUnit]:
        """A unit in which a new order of this user is created; commits when the block ends without error."""
        ...

    def for_order(self, order_id: int) -> AbstractContextManager[OrderUnit]:
        """A unit over an existing order and the stock; commits when the block ends without error."""
        ...

    def for_shard(self, index: int) -> AbstractContextManager[OrderUnit]:
        """A unit over the orders of shard `index` (0 ≤ index < shard_count) and the stock."""
        ...

    def place_order(
        self, user_id: int, items: tuple[Item, ...]
    ) -> tuple[Order, InsufficientStockError | None]:
        """Create an order as one unit and commit it: what service.place_in does in a unit for a new order of
        this user (an adapter may do the same in fewer round trips). `items`: merged, ascending by SKU.
        Returns the order in its final status, and the refusal (naming the order) when it `failed`."""
        ...


class OrderReader(Protocol):
    def get(self, order_id: int) -> Order | None: ...  # may lag a little behind (a replica); None: unknown


class StockReader(Protocol):
    def get(self, sku: int) -> StockLevel | None: ...  # may lag a little behind (a replica); None: unknown


class SweepCoordinator(Protocol):
    def claim(self, shard: int) -> AbstractContextManager[bool]:
        """True when this caller alone sweeps `shard` until the block ends; False at once if another does."""
        ...

    def orphaned_reservations(self, older_than: timedelta, limit: int) -> list[int]:
        """Ids of orders that hold reservations older than `older_than` but have no order row: a create that
        died between its two commits (see adapters/pg_unit_of_work.py). At most `limit`, ascending."""
        ...

    def prune_sent_events(self, shard: int, older_than: timedelta, limit: int) -> int:
        """Delete at most `limit` of the shard's outbox events that were marked sent longer than `older_than`
        ago, oldest first; never an unsent one. Returns how many went."""
        ...


class Outbox(Protocol):
    """The status events waiting in every shard's outbox, as one relay (one thread) sees them."""

    @property
    def shard_count(self) -> int: ...

    def claim(self, shard: int) -> AbstractContextManager[bool]:
        """True when this relay alone publishes `shard`'s events until the block ends; False at once when
        another relay does. Correctness never rests on it (a lost claim costs duplicates, not order)."""
        ...

    def pending(self, shard: int, limit: int) -> list[OrderStatusChanged]:
        """Up to `limit` events of the shard not yet marked sent, ascending by event id."""
        ...

    def mark_sent(self, shard: int, event_ids: Sequence[int]) -> None: ...

    def wait(self, timeout: float) -> bool:
        """Block until events may have arrived in any shard (True) or `timeout` seconds passed (False)."""
        ...

    def close(self) -> None: ...


class EventPublisher(Protocol):
    def publish(self, topic: str, events: Sequence[Event]) -> None:
        """Return only once the transport acknowledged every event, in order per key; else TransientError,
        or its PartialPublishError naming the events that were acknowledged."""
        ...
