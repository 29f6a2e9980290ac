"""The order viewer's configuration: the only reader of the environment for this service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_")

    database_url: str = "postgresql://postgres@127.0.0.1:15432/orders"
    pool_size: int = Field(8, ge=1, le=1000)

    memcached: str = ""  # host:port,host:port; empty: a cache in this process only
    cache_ttl_seconds: float = Field(3600, gt=0)  # a stored order never changes: only memory bounds this
    warm_cache: bool = True  # cache each new order as it is stored, so its first read is a hit
    # found orders also kept in this process, in front of Memcached (an order never changes; a 404 is never
    # kept here): least recently read go first beyond either bound; 0 entries: no such tier
    local_cache_entries: int = Field(10_000, ge=0)
    local_cache_bytes: int = Field(32 * 1024 * 1024, ge=0)

    kafka_bootstrap: str = ""  # empty: dead letters go to the log (the dev server's embedded mode)
    topic: str = "orders"
    dead_letter_topic: str = "orders.dlq"
    # the ingest worker's group, in make run and in the cluster alike: the one ingest_order's KafkaSource had,
    # so a cluster that delivered record by record goes on from its committed offsets
    consumer_group: str = "shop.orders.ingest_order"
    batch_size: int = Field(1000, ge=1, le=100_000)  # records per batch (and per transaction)

    future_skew_seconds: float = Field(300, ge=0)  # how far in the future date_created may be
    recent_count: int = Field(8, ge=0, le=100)  # orders listed on the page
    api_url: str = ""  # where the page fetches orders from; empty: its own origin (the dev server's port)
