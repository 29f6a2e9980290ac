"""The cart function's composition root: settings, pools, clients and the service, built once on first use.

Migrations are not applied here: the dev server and the deployment apply sql/shared and sql/cart first.
"""

from __future__ import annotations

import functools

from functions.cart.adapters.cache import CachedProductCatalog, InMemoryTtlProductCache
from functions.cart.adapters.loms_http import HttpOrderPlacer, HttpStockLookup
from functions.cart.adapters.postgres import PgCartRepository
from functions.cart.adapters.product_http import HttpProductCatalog
from functions.cart.ports import ProductCache, ProductCatalog
from functions.cart.service import CartService
from functions.cart.settings import CartSettings
from shared_lib.cache import MemcachedCache, shared_or_local
from shared_lib.httpclient import HttpClient
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool
from shared_lib.ratelimit import PgRateLimiter
from shared_lib.retry import Backoff

PRODUCT_RATE_LIMIT = "cart:product.get_product"  # one name: every cart replica shares this limit
MEMCACHED_PREFIX = "cart:"
LOCAL_CACHE = "cart-products-in-process"  # the in-process product cache's name in metrics


class MeasuredCartRepository(PgCartRepository):
    """The cart repository, each cart's size observed when it is read (list_cart, checkout)."""

    def items_of(self, user_id: int) -> dict[int, int]:
        items = super().items_of(user_id)
        metrics.CART_ITEMS.observe(len(items))
        return items


@functools.cache
def settings() -> CartSettings:
    return CartSettings()


@functools.cache
def database() -> ConnectionPool:
    return ConnectionPool(settings().database_url, size=settings().pool_size, name="cart")


@functools.cache
def cart_service() -> CartService:
    config = settings()
    pool = database()
    product_client = HttpClient(
        config.product_url,
        name="the product service",
        timeout=config.http_timeout_seconds,
        headers={"X-API-KEY": config.product_api_key},
        max_connections=max(10, 2 * config.product_workers),
    )
    stock_client = HttpClient(
        config.loms_stock_url or config.loms_url, name="loms", timeout=config.http_timeout_seconds
    )
    orders_client = HttpClient(
        config.loms_orders_url or config.loms_url, name="loms", timeout=config.http_timeout_seconds
    )
    catalog: ProductCatalog = HttpProductCatalog(
        product_client,
        PgRateLimiter(pool, PRODUCT_RATE_LIMIT, config.product_rps),
        workers=config.product_workers,
        tries=config.product_retries,
        backoff=Backoff(config.product_backoff_base_seconds, config.product_backoff_max_seconds),
    )
    ttl = config.product_cache_ttl_seconds
    products = shared_or_local(
        config.memcached if ttl > 0 else "", MEMCACHED_PREFIX, LOCAL_CACHE, config.product_cache_max_entries
    )
    local: ProductCache
    if isinstance(products, MemcachedCache):
        # one cache for every replica; a second, per-process layer would only add staleness
        catalog = CachedProductCatalog(catalog, products, ttl, workers=config.product_workers)
        local = InMemoryTtlProductCache(0)  # keeps nothing
    else:
        local = InMemoryTtlProductCache(ttl, cache=products)
    return CartService(
        carts=MeasuredCartRepository(pool),
        catalog=catalog,
        stock=HttpStockLookup(stock_client),
        orders=HttpOrderPlacer(orders_client),
        cache=local,
    )


@functools.cache
def idempotency() -> PgIdempotencyStore:
    # its own pool: the store holds a connection (and an advisory lock) while the request's action runs
    config = settings()
    return PgIdempotencyStore(
        ConnectionPool(config.database_url, size=config.idempotency_pool_size, name="cart-idempotency")
    )
