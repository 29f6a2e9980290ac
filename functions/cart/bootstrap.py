"""The cart function's composition root: settings, pools, clients and the service, built once on first use.

`bootstrap(...)` takes the dependencies to use (a test's fakes); what it is not given it builds from the
settings. The handlers in main.py use the current root, built from the environment when none was made.
Migrations are not applied here: the dev server and the deployment apply sql/shared and sql/cart first.
"""

from __future__ import annotations

import functools

from functions.cart.adapters.cache import CachedProductCatalog, InMemoryTtlProductCache, LocalProducts
from functions.cart.adapters.loms_http import HttpOrderPlacer, HttpStockLookup
from functions.cart.adapters.postgres import PgCartRepository
from functions.cart.adapters.product_http import HttpProductCatalog
from functions.cart.ports import CartRepository, OrderPlacer, ProductCache, ProductCatalog, StockLookup
from functions.cart.service import CartService
from functions.cart.settings import CartSettings
from shared_lib import lifecycle
from shared_lib.cache import MemcachedCache, shared_or_local
from shared_lib.httpclient import HttpClient
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool
from shared_lib.ratelimit import PgRateLimiter
from shared_lib.retry import Backoff
from shared_lib.web import IdempotencyStore

PRODUCT_RATE_LIMIT = "cart:product.get_product"  # one name: every cart replica shares this limit
MEMCACHED_PREFIX = "cart:"
LOCAL_CACHE = "cart-products-in-process"  # the in-process product cache's name in metrics


class MeasuredCartRepository(PgCartRepository):
    """The cart repository, each cart's size observed when it is read (list_cart, checkout)."""

    def items_of(self, user_id: int) -> dict[int, int]:
        items = super().items_of(user_id)
        metrics.CART_ITEMS.observe(len(items))
        return items


class Root:
    """The cart function's objects; each built on first use unless given. `memcached_prefix`: the key space
    of the shared product cache (every replica of one deployment uses the same)."""

    def __init__(
        self,
        settings: CartSettings | None = None,
        *,
        carts: CartRepository | None = None,
        catalog: ProductCatalog | None = None,
        stock: StockLookup | None = None,
        orders: OrderPlacer | None = None,
        cache: ProductCache | None = None,
        idempotency: IdempotencyStore | None = None,
        memcached_prefix: str = MEMCACHED_PREFIX,
    ) -> None:
        self._settings = settings
        self._carts, self._catalog, self._stock, self._orders = carts, catalog, stock, orders
        self._cache, self._idempotency = cache, idempotency
        self.memcached_prefix = memcached_prefix

    @functools.cached_property
    def settings(self) -> CartSettings:
        return self._settings if self._settings is not None else CartSettings()

    @functools.cached_property
    def database(self) -> ConnectionPool:
        return ConnectionPool(self.settings.database_url, size=self.settings.pool_size, name="cart")

    @functools.cached_property
    def cart_service(self) -> CartService:
        config = self.settings
        catalog = self._catalog
        if catalog is None:
            catalog = HttpProductCatalog(
                HttpClient(
                    config.product_url,
                    name="the product service",
                    timeout=config.http_timeout_seconds,
                    headers={"X-API-KEY": config.product_api_key},
                    max_connections=max(10, 2 * config.product_workers),
                ),
                PgRateLimiter(self.database, PRODUCT_RATE_LIMIT, config.product_rps),
                workers=config.product_workers,
                tries=config.product_retries,
                backoff=Backoff(config.product_backoff_base_seconds, config.product_backoff_max_seconds),
            )
        local = self._cache
        if local is None:
            ttl = config.product_cache_ttl_seconds
            products = shared_or_local(
                config.memcached if ttl > 0 else "",
                self.memcached_prefix,
                LOCAL_CACHE,
                config.product_cache_max_entries,
            )
            if isinstance(products, MemcachedCache):
                # one cache for every replica, and in front of it a short-lived tier in this process that
                # never keeps an entry past its shared expiry (it adds no staleness, only saves round trips)
                kept = LocalProducts(
                    config.product_local_ttl_seconds, config.product_cache_max_entries, name=LOCAL_CACHE
                )
                catalog = CachedProductCatalog(
                    catalog, products, ttl, workers=config.product_workers, local=kept
                )
                local = InMemoryTtlProductCache(0)  # keeps nothing: the catalogue's own tier does
            else:
                local = InMemoryTtlProductCache(ttl, cache=products)
        timeout = config.http_timeout_seconds
        return CartService(
            carts=self._carts or MeasuredCartRepository(self.database),
            catalog=catalog,
            stock=self._stock
            or HttpStockLookup(
                HttpClient(config.loms_stock_url or config.loms_url, name="loms", timeout=timeout)
            ),
            orders=self._orders
            or HttpOrderPlacer(
                HttpClient(config.loms_orders_url or config.loms_url, name="loms", timeout=timeout)
            ),
            cache=local,
        )

    @functools.cached_property
    def idempotency(self) -> IdempotencyStore:
        if self._idempotency is not None:
            return self._idempotency
        # its own pool: the store holds a connection (and an advisory lock) while the request's action runs
        config = self.settings
        return PgIdempotencyStore(
            ConnectionPool(config.database_url, size=config.idempotency_pool_size, name="cart-idempotency")
        )

    def close(self) -> None:
        """Close the pools this root opened (none when nothing was built)."""
        if "database" in self.__dict__:
            self.database.close()
        store = self.__dict__.get("idempotency")
        if isinstance(store, PgIdempotencyStore):
            store.pool.close()


_roots = lifecycle.Current(Root, Root.close)
bootstrap = _roots.bootstrap  # a root on the given dependencies, made the one in use
root = _roots.root
reset = _roots.reset


def settings() -> CartSettings:
    return root().settings


def cart_service() -> CartService:
    return root().cart_service


def idempotency() -> IdempotencyStore:
    return root().idempotency
