"""What the product service needs from the outside world."""

from __future__ import annotations

from typing import Protocol

from functions.product.domain import Product


class Catalogue(Protocol):
    def get(self, sku: int) -> Product | None: ...  # None: no such SKU

    def page(self, start_after_sku: int, count: int) -> list[Product]: ...  # ascending by sku


class RateLimiter(Protocol):
    def try_acquire(self) -> bool: ...  # False: over the rate, refuse the request


class Latency(Protocol):
    def pause(self) -> None: ...  # injected latency; a no-op unless configured
