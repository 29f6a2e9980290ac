"""What the loms service needs from the outside world: units of work over orders and stock, and stale reads.

Protocols only. A unit of work is the transaction boundary: what happens inside one commits or rolls back
as one (see adapters/postgres.py for how that holds when an order and the stock live in different databases).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from functions.loms.domain import Item, Order, OrderStatus, StockLevel


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
    def for_new_order(self, user_id: int) -> AbstractContextManager[OrderUnit]:
        """A unit in which a new order of this user is created; commits when the block ends without error."""
        ...

    def for_order(self, order_id: int) -> AbstractContextManager[OrderUnit]:
        """A unit over an existing order and the stock; commits when the block ends without error."""
        ...


class OrderReader(Protocol):
    def get(self, order_id: int) -> Order | None: ...  # may lag a little behind (a replica); None: unknown


class StockReader(Protocol):
    def get(self, sku: int) -> StockLevel | None: ...  # may lag a little behind (a replica); None: unknown
