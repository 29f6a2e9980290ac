"""The catalogue's domain: a product and the errors the product service raises. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

from shared_lib.errors import NotFoundError, RateLimitedError, UnauthenticatedError


@dataclass(frozen=True, slots=True)
class Product:
    sku: int
    name: str
    price: int  # whole roubles


class UnknownProductError(NotFoundError):
    def __init__(self, sku: int) -> None:
        super().__init__(f"no product with sku {sku}")
        self.sku = sku


class InvalidApiKeyError(UnauthenticatedError):
    def __init__(self) -> None:
        super().__init__("missing or wrong X-API-KEY")


class ProductRateExceededError(RateLimitedError):
    def __init__(self) -> None:
        super().__init__("too many requests to the product service; slow down")
