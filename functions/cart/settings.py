"""The cart service's configuration: the only reader of the environment for this service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CartSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CART_")

    database_url: str = "postgresql://postgres@127.0.0.1:15432/cart"
    pool_size: int = Field(8, ge=1)  # cart queries and the shared rate limiter
    idempotency_pool_size: int = Field(8, ge=1)  # holds a connection for the whole mutating request
    http_timeout_seconds: float = Field(5.0, gt=0)

    product_url: str = "http://127.0.0.1:8082"
    product_api_key: str = "testToken"
    product_rps: float = Field(10, gt=0)  # across all replicas, through PostgreSQL
    product_workers: int = Field(5, ge=1)  # product requests in flight per list request
    product_retries: int = Field(3, ge=1)  # tries in all on 420/429
    product_backoff_base_seconds: float = Field(0.1, ge=0)
    product_backoff_max_seconds: float = Field(1.0, ge=0)
    product_cache_ttl_seconds: float = Field(60, ge=0)  # 0: no cache
    product_cache_max_entries: int = Field(100_000, ge=1)
    # host:port,host:port: product info cached in Memcached, shared by every replica, with stampede
    # protection; empty: the in-process cache above
    memcached: str = ""
    # with Memcached: what a list read from it is also kept in this process for, at most (0: not kept), and
    # never past the shared entry's own TTL, so a name or price change still shows within the TTL above
    product_local_ttl_seconds: float = Field(5, ge=0)

    loms_url: str = "http://127.0.0.1:8084"
    # In a cluster every function is its own Knative Service, so stock_info and create_order have a URL each;
    # empty: loms_url (the dev server serves all of loms on one port)
    loms_stock_url: str = ""
    loms_orders_url: str = ""
