"""The product catalogue over HTTP (product.get_product), paced by the shared rate limiter.

Every attempt, retries included, waits for the limiter; 420 and 429 are retried with backoff; an outage
(refused, timeout, 5xx) is a TransientError. A list fans out on a bounded pool: the first error ends it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pydantic

from functions.cart.domain import Product
from shared_lib.errors import TransientError
from shared_lib.httpclient import HttpClient, UnexpectedResponseError
from shared_lib.ratelimit import RateLimiter
from shared_lib.retry import DEFAULT_BACKOFF, Backoff, retry
from shared_lib.workpool import map_bounded

THROTTLED = frozenset({420, 429})


class ProductThrottledError(TransientError):
    """The product service refused us for going too fast; another try after a pause may pass."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the product service is throttling requests ({status})")
        self.status = status


class _ProductBody(pydantic.BaseModel):
    sku: int
    name: str
    price: int


class HttpProductCatalog:
    def __init__(
        self,
        client: HttpClient,
        limiter: RateLimiter,
        *,
        workers: int = 5,
        tries: int = 3,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.workers = workers
        self.tries = tries
        self.backoff = backoff

    def get(self, sku: int) -> Product | None:
        return self._fetch(sku, None)

    def many(self, skus: Sequence[int]) -> dict[int, Product]:
        cancel = threading.Event()
        found = map_bounded(lambda sku: self._fetch(sku, cancel), skus, self.workers, cancel=cancel)
        return {p.sku: p for p in found if p is not None}

    def _fetch(self, sku: int, cancel: threading.Event | None) -> Product | None:
        return retry(
            lambda: self._attempt(sku, cancel),
            tries=self.tries,
            retry_on=ProductThrottledError,
            backoff=self.backoff,
            cancel=cancel,
        )

    def _attempt(self, sku: int, cancel: threading.Event | None) -> Product | None:
        self.limiter.acquire(cancel)
        response = self.client.get(f"/product/{sku}")
        if response.status == 200:
            try:
                body = _ProductBody.model_validate(response.json())
            except pydantic.ValidationError:
                raise UnexpectedResponseError("the product service answered 200 without a product") from None
            return Product(sku=body.sku, name=body.name, price=body.price)
        if response.status == 404:
            return None
        if response.status in THROTTLED:
            raise ProductThrottledError(response.status)
        if response.status >= 500:
            raise TransientError(f"the product service is unavailable ({response.status})")
        # 401 (a wrong key in our configuration) or anything else the contract does not allow
        raise UnexpectedResponseError(f"the product service answered {response.status}")
