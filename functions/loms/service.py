"""loms use cases: create, pay and cancel orders against the stock, and read orders and stock levels.

No Flask, no SQL, no environment here: transactions come from the UnitOfWork port.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from functions.loms.domain import (
    InsufficientStockError,
    Item,
    Order,
    OrderStatus,
    UnknownOrderError,
    UnknownSkuError,
    merge_items,
)
from functions.loms.ports import OrderReader, StockReader, UnitOfWork


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
        merged = merge_items(items)
        refused: InsufficientStockError | None = None
        with self.units.for_new_order(user_id) as unit:
            order = unit.orders.add(user_id, merged)
            try:
                unit.stock.reserve(order.order_id, order.items)
            except InsufficientStockError as exc:
                unit.orders.change_status(order, OrderStatus.FAILED)
                refused = exc.of_order(order.order_id)
            else:
                unit.orders.change_status(order, OrderStatus.AWAITING_PAYMENT)
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
            if order.needs_cancelling():
                unit.stock.release(order_id)
                unit.orders.change_status(order, OrderStatus.CANCELLED)

    def stock_info(self, sku: int) -> int:
        """What can still be ordered: total minus reserved, never below 0.

        Raises UnknownSkuError, TransientError.
        """
        level = self.stock.get(sku)
        if level is None:
            raise UnknownSkuError(sku)
        return level.available
