"""The product function's composition root: settings, adapters and the service, built once on first use."""

from __future__ import annotations

import functools

from functions.product.adapters.catalogue import GeneratedCatalogue
from functions.product.adapters.pacing import SleepLatency, TokenBucket
from functions.product.service import ProductService
from functions.product.settings import ProductSettings


@functools.cache
def product_service() -> ProductService:
    settings = ProductSettings()
    return ProductService(
        catalogue=GeneratedCatalogue.from_data(settings.generated_count),
        api_keys=settings.keys(),
        limiter=TokenBucket(settings.rate_limit_rps, settings.rate_limit_burst),
        latency=SleepLatency(settings.latency_ms, settings.latency_jitter_ms),
    )
