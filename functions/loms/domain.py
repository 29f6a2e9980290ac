"""The loms domain: orders, their statuses and items, stock levels, and the errors loms raises.

No I/O and no framework here; the status rules live in one table, `NEXT`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from shared_lib.errors import InvalidInputError, NotFoundError, PreconditionError

UINT32_MAX = 2**32 - 1


class OrderStatus(enum.StrEnum):
    NEW = "new"
    AWAITING_PAYMENT = "awaiting payment"
    FAILED = "failed"
    PAID = "paid"
    CANCELLED = "cancelled"


# Where each status may go. `new` only exists inside create_order's transaction, but a cancel of it is allowed
# so that a sweep never has to special-case it.
NEXT: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset({OrderStatus.AWAITING_PAYMENT, OrderStatus.FAILED, OrderStatus.CANCELLED}),
    OrderStatus.AWAITING_PAYMENT: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
}


@dataclass(frozen=True, slots=True)
class Item:
    sku: int
    count: int


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    user_id: int
    status: OrderStatus
    items: tuple[Item, ...]  # one per SKU, ascending by SKU

    def moved_to(self, status: OrderStatus) -> Order:
        """This order in `status`; raises IllegalStatusChangeError for a move the status table forbids."""
        if status not in NEXT.get(self.status, frozenset()):
            raise IllegalStatusChangeError(self.order_id, self.status, status)
        return replace(self, status=status)

    def needs_payment(self) -> bool:
        """True when paying has work to do, False when it is already paid; raises OrderNotPayableError."""
        if self.status is OrderStatus.PAID:
            return False
        if self.status is not OrderStatus.AWAITING_PAYMENT:
            raise OrderNotPayableError(self.order_id, self.status)
        return True

    def needs_cancelling(self) -> bool:
        """True when cancelling has work to do, False if done already; raises OrderNotCancellableError."""
        if self.status is OrderStatus.CANCELLED:
            return False
        if OrderStatus.CANCELLED not in NEXT.get(self.status, frozenset()):
            raise OrderNotCancellableError(self.order_id, self.status)
        return True


def merge_items(items: Iterable[Item]) -> tuple[Item, ...]:
    """One item per SKU with the counts added, ascending by SKU (the order stock rows are locked in)."""
    totals: dict[int, int] = {}
    for item in items:
        totals[item.sku] = totals.get(item.sku, 0) + item.count
    if not totals:
        raise EmptyOrderError()
    for sku, count in totals.items():
        if not 0 < count <= UINT32_MAX:
            raise ItemCountOutOfRangeError(sku)
    return tuple(Item(sku, totals[sku]) for sku in sorted(totals))


@dataclass(frozen=True, slots=True)
class StockLevel:
    sku: int
    total_count: int
    reserved: int

    @property
    def available(self) -> int:
        return max(0, self.total_count - self.reserved)


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    """One status change of an order, as its outbox row holds it until the relay has published it.

    `event_id` is unique across shards and is the event's CloudEvents id; an order's changes have ascending
    ids in the order they happened (they are written under the order's row lock).
    """

    event_id: int
    order_id: int
    user_id: int
    status: OrderStatus
    moment: datetime  # when the change was made (timezone-aware)
    traceparent: str | None = None


# --- errors -------------------------------------------------------------------------------------------


class EmptyOrderError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__("an order needs at least one item")


class ItemCountOutOfRangeError(InvalidInputError):
    def __init__(self, sku: int) -> None:
        super().__init__(f"the total count of sku {sku} must be between 1 and {UINT32_MAX}")
        self.sku = sku


class UnknownOrderError(NotFoundError):
    def __init__(self, order_id: int) -> None:
        super().__init__(f"no order with id {order_id}")
        self.order_id = order_id


class UnknownSkuError(NotFoundError):
    def __init__(self, sku: int) -> None:
        super().__init__(f"no stock record for sku {sku}")
        self.sku = sku


class InsufficientStockError(PreconditionError):
    """A SKU has no stock record (`available` None) or less available than wanted; nothing was reserved."""

    def __init__(self, sku: int, wanted: int, available: int | None, order_id: int | None = None) -> None:
        reason = (
            f"sku {sku} has no stock record"
            if available is None
            else f"not enough stock for sku {sku}: wanted {wanted}, available {available}"
        )
        super().__init__(reason if order_id is None else f"order {order_id} failed: {reason}")
        self.sku = sku
        self.wanted = wanted
        self.available = available
        self.order_id = order_id

    def of_order(self, order_id: int) -> InsufficientStockError:
        return InsufficientStockError(self.sku, self.wanted, self.available, order_id)


class OrderNotPayableError(PreconditionError):
    def __init__(self, order_id: int, status: OrderStatus) -> None:
        super().__init__(f"order {order_id} is {status.value}, so it cannot be paid")
        self.order_id = order_id
        self.status = status


class OrderNotCancellableError(PreconditionError):
    def __init__(self, order_id: int, status: OrderStatus) -> None:
        super().__init__(f"order {order_id} is {status.value}, so it cannot be cancelled")
        self.order_id = order_id
        self.status = status


class IllegalStatusChangeError(PreconditionError):
    def __init__(self, order_id: int, current: OrderStatus, wanted: OrderStatus) -> None:
        super().__init__(f"order {order_id} cannot go from {current.value} to {wanted.value}")
        self.order_id = order_id
