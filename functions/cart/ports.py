"""What the cart service needs from the outside world: small protocols, no implementations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from functions.cart.domain import Product


class CartRepository(Protocol):
    def items_of(self, user_id: int) -> dict[int, int]: ...  # sku -> count; {} for an empty or absent cart

    def add(self, user_id: int, sku: int, count: int, limit: int) -> bool:
        """Add `count` to the line atomically unless the resulting count would exceed `limit`.

        False: it would have, and nothing changed. Two concurrent adds never exceed `limit` together.
        """
        ...

    def remove(self, user_id: int, sku: int) -> None: ...  # absent line or cart: nothing to do

    def clear(self, user_id: int) -> None: ...

    def remove_ordered(self, user_id: int, ordered: Mapping[int, int]) -> None:
        """Take the ordered counts out of the cart: a line drops by what was ordered and goes at zero.

        What was added to a line after the snapshot that was ordered stays in the cart.
        """
        ...


class ProductCatalog(Protocol):
    def get(self, sku: int) -> Product | None: ...  # None: no such SKU

    def many(self, skus: Sequence[int]) -> dict[int, Product]: ...  # SKUs it does not know are absent


class ProductCache(Protocol):
    def get(self, sku: int) -> Product | None: ...  # None: not cached (or expired)

    def put(self, product: Product) -> None: ...


class StockLookup(Protocol):
    def available(self, sku: int) -> int | None: ...  # None: loms has no stock record for the SKU


class OrderPlacer(Protocol):
    def create_order(self, user_id: int, items: Mapping[int, int], idempotency_key: str | None = None) -> int:
        """The new order's id. Raises OrderRejectedError when loms cannot reserve the stock.

        With a key, a repeat of the same call returns the first order instead of creating another.
        """
        ...
