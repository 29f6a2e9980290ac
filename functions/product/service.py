"""Product use cases: authenticate, apply the server-side rate, inject latency, read the catalogue."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from functions.product.domain import (
    InvalidApiKeyError,
    Product,
    ProductRateExceededError,
    UnknownProductError,
)
from functions.product.ports import Catalogue, Latency, RateLimiter


@dataclass(frozen=True, slots=True)
class ProductService:
    catalogue: Catalogue
    api_keys: frozenset[str]
    limiter: RateLimiter
    latency: Latency

    def get_product(self, api_key: str | None, sku: int) -> Product:
        """Raises InvalidApiKeyError, ProductRateExceededError, UnknownProductError."""
        self._admit(api_key)
        product = self.catalogue.get(sku)
        if product is None:
            raise UnknownProductError(sku)
        return product

    def list_products(self, api_key: str | None, start_after_sku: int, count: int) -> list[Product]:
        """Raises InvalidApiKeyError, ProductRateExceededError."""
        self._admit(api_key)
        return self.catalogue.page(start_after_sku, count)

    def authenticate(self, api_key: str | None) -> None:
        """Raises InvalidApiKeyError unless the key is a configured one. Takes nothing of the rate."""
        if api_key is None or not any(hmac.compare_digest(api_key, k) for k in self.api_keys):
            raise InvalidApiKeyError()

    def _admit(self, api_key: str | None) -> None:
        self.authenticate(api_key)
        if not self.limiter.try_acquire():
            raise ProductRateExceededError()
        self.latency.pause()
