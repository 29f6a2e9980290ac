"""Cart use cases: add, delete, clear, list and check out a user's cart. No Flask, no SQL, no environment."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from functions.cart.domain import (
    UINT32_MAX,
    CartLine,
    CartView,
    EmptyCartError,
    NotEnoughStockError,
    Product,
    UnknownSkuError,
)
from functions.cart.ports import CartRepository, OrderPlacer, ProductCache, ProductCatalog, StockLookup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CartService:
    carts: CartRepository
    catalog: ProductCatalog
    stock: StockLookup
    orders: OrderPlacer
    cache: ProductCache

    def add_item(self, user_id: int, sku: int, count: int) -> None:
        """Raises UnknownSkuError, NotEnoughStockError, TransientError; on any error the cart is unchanged."""
        if self._product(sku) is None:
            raise UnknownSkuError(sku)
        available = self.stock.available(sku)
        if available is None:  # the catalogue knows it but loms keeps no stock of it
            raise NotEnoughStockError(sku)
        # the check and the add are one atomic step in the repository, so concurrent adds cannot overshoot
        if not self.carts.add(user_id, sku, count, limit=min(available, UINT32_MAX)):
            raise NotEnoughStockError(sku)

    def delete_item(self, user_id: int, sku: int) -> None:
        self.carts.remove(user_id, sku)

    def clear_cart(self, user_id: int) -> None:
        self.carts.clear(user_id)

    def list_cart(self, user_id: int) -> CartView:
        """Raises EmptyCartError, TransientError."""
        items = self.carts.items_of(user_id)
        if not items:
            raise EmptyCartError(user_id)
        skus = sorted(items)
        products = self._products(skus)
        lines = []
        for sku in skus:
            product = products.get(sku)
            if product is None:  # withdrawn from the catalogue since it was added: nothing to show or price
                log.warning("cart of user %s holds sku %s that the catalogue no longer knows", user_id, sku)
                continue
            lines.append(CartLine(sku=sku, name=product.name, count=items[sku], price=product.price))
        return CartView(tuple(lines))

    def checkout(self, user_id: int, request_key: str | None = None) -> int:
        """The new order's id. Raises EmptyCartError, OrderRejectedError, TransientError.

        The cart is emptied only after loms created the order, and only of what was ordered. A checkout sent
        with an Idempotency-Key passes a key derived from it to loms, so a retry after a failure that came
        once the order existed (clearing the cart failed, the answer was lost) finds that order again.
        """
        items = self.carts.items_of(user_id)
        if not items:
            raise EmptyCartError(user_id)
        loms_key = None if request_key is None else f"cart-checkout:{user_id}:{request_key}"
        order_id = self.orders.create_order(user_id, items, loms_key)
        self.carts.remove_ordered(user_id, items)
        return order_id

    def _product(self, sku: int) -> Product | None:
        product = self.cache.get(sku)
        if product is None:
            product = self.catalog.get(sku)
            if product is not None:
                self.cache.put(product)
        return product

    def _products(self, skus: Sequence[int]) -> dict[int, Product]:
        found: dict[int, Product] = {}
        for sku in skus:
            cached = self.cache.get(sku)
            if cached is not None:
                found[sku] = cached
        missing = [sku for sku in skus if sku not in found]
        if missing:
            fetched = self.catalog.many(missing)
            for product in fetched.values():
                self.cache.put(product)
            found.update(fetched)
        return found
