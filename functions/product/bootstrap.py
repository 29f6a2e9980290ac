"""The product function's composition root: settings, adapters and the service, built once on first use.

`bootstrap(...)` takes the dependencies to use (a test's fakes); what it is not given it builds from the
settings. The handlers in main.py use the current root, built from the environment when none was made.
"""

from __future__ import annotations

import functools

from functions.product.adapters.catalogue import GeneratedCatalogue
from functions.product.adapters.pacing import SleepLatency, TokenBucket
from functions.product.ports import Catalogue, Latency, RateLimiter
from functions.product.service import ProductService
from functions.product.settings import ProductSettings
from shared_lib import lifecycle


class Root:
    """The product function's objects; each built on first use unless given."""

    def __init__(
        self,
        settings: ProductSettings | None = None,
        *,
        catalogue: Catalogue | None = None,
        limiter: RateLimiter | None = None,
        latency: Latency | None = None,
    ) -> None:
        self._settings, self._catalogue, self._limiter, self._latency = settings, catalogue, limiter, latency

    @functools.cached_property
    def settings(self) -> ProductSettings:
        return self._settings if self._settings is not None else ProductSettings()

    @functools.cached_property
    def product_service(self) -> ProductService:
        config = self.settings
        return ProductService(
            catalogue=self._catalogue or GeneratedCatalogue.from_data(config.generated_count),
            api_keys=config.keys(),
            limiter=self._limiter or TokenBucket(config.rate_limit_rps, config.rate_limit_burst),
            latency=self._latency or SleepLatency(config.latency_ms, config.latency_jitter_ms),
        )


_roots = lifecycle.Current(Root)
bootstrap = _roots.bootstrap  # a root on the given dependencies, made the one in use
root = _roots.root
reset = _roots.reset


def product_service() -> ProductService:
    return root().product_service
