"""The cart's domain: products as the cart sees them, a listed cart and the cart's errors. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

from shared_lib.errors import NotFoundError, PreconditionError

UINT32_MAX = 4_294_967_295  # counts are uint32; a cart line never holds more


@dataclass(frozen=True, slots=True)
class Product:
    sku: int
    name: str
    price: int


@dataclass(frozen=True, slots=True)
class CartLine:
    sku: int
    name: str
    count: int
    price: int


@dataclass(frozen=True, slots=True)
class CartView:
    """A listed cart: lines ascending by sku, and what they cost together."""

    lines: tuple[CartLine, ...]

    @property
    def total_price(self) -> int:
        return sum(line.price * line.count for line in self.lines)


class UnknownSkuError(PreconditionError):
    def __init__(self, sku: int) -> None:
        super().__init__(f"there is no product with sku {sku}")
        self.sku = sku


class NotEnoughStockError(PreconditionError):
    def __init__(self, sku: int) -> None:
        super().__init__(f"not enough stock of sku {sku} for the requested count")
        self.sku = sku


class OrderRejectedError(PreconditionError):
    """loms refused the order: a SKU has no stock record or too little available stock."""

    def __init__(self) -> None:
        super().__init__("the stock for this order could not be reserved")


class EmptyCartError(NotFoundError):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"the cart of user {user_id} is empty")
        self.user_id = user_id
