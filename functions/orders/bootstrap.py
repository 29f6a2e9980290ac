"""The order viewer's composition root: settings, the pool, the cache, the dead-letter publisher and the
service, built once on first use. Also what the dev server and deploy jobs call: `migrate()`, and what the
batch worker runs: `ingest_forever(stop)`.
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import timedelta
from pathlib import Path

from functions.orders import consumer
from functions.orders.adapters.kafka import KafkaDeadLetters, KafkaOrderStream, LogDeadLetters
from functions.orders.adapters.postgres import PgOrderRepository
from functions.orders.domain import SourceRecord
from functions.orders.ports import DeadLetters
from functions.orders.service import OrdersService
from functions.orders.settings import OrdersSettings
from shared_lib import lifecycle, postgres
from shared_lib.cache import Cache, shared_or_local
from shared_lib.counters import InProcessCounters
from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool

log = logging.getLogger(__name__)

SQL = Path(__file__).resolve().parents[2] / "sql"
CACHE_PREFIX = "orders:"


@functools.cache
def settings() -> OrdersSettings:
    return OrdersSettings()


@functools.cache
def database() -> ConnectionPool:
    pool = ConnectionPool(settings().database_url, size=settings().pool_size, name="orders")
    lifecycle.on_shutdown(pool.close)
    return pool


@functools.cache
def cache() -> Cache:
    return shared_or_local(settings().memcached, CACHE_PREFIX)


class ExportedCounters(InProcessCounters):
    """The in-process ingest counters, each also exported: stored orders as shop_orders_ingested_total, every
    other outcome (duplicate, conflict, invalid) as shop_orders_rejected_total{reason}."""

    def increment(self, name: str, by: int = 1) -> None:
        super().increment(name, by)
        if name == "stored":
            metrics.ORDERS_INGESTED.inc(by)
        else:
            metrics.ORDERS_REJECTED.labels(name).inc(by)


@functools.cache
def counters() -> InProcessCounters:
    return ExportedCounters()


@functools.cache
def dead_letters() -> DeadLetters:
    config = settings()
    if not config.kafka_bootstrap.strip():
        return LogDeadLetters()
    publisher = KafkaDeadLetters(config.kafka_bootstrap, config.dead_letter_topic)
    lifecycle.on_shutdown(publisher.close)
    return publisher


@functools.cache
def repository() -> PgOrderRepository:
    return PgOrderRepository(database())


@functools.cache
def orders_service() -> OrdersService:
    config = settings()
    return OrdersService(
        orders=repository(),
        dead_letters=dead_letters(),
        cache=cache(),
        counters=counters(),
        cache_ttl_seconds=config.cache_ttl_seconds,
        warm_cache=config.warm_cache,
        future_skew=timedelta(seconds=config.future_skew_seconds),
        recent_count=config.recent_count,
    )


def api_url() -> str:
    return settings().api_url


def migrate() -> list[str]:
    """Apply sql/shared and sql/orders to ORDERS_DATABASE_URL (the database must exist)."""
    return postgres.migrate(OrdersSettings().database_url, [SQL / "shared", SQL / "orders"])


def order_stream() -> KafkaOrderStream:
    config = settings()
    if not config.kafka_bootstrap.strip():
        raise RuntimeError("the ingest worker needs ORDERS_KAFKA_BOOTSTRAP")
    return KafkaOrderStream(
        config.kafka_bootstrap, config.topic, config.consumer_group, batch_size=config.batch_size
    )


def ingest_forever(stop: threading.Event, stream: KafkaOrderStream | None = None) -> None:
    """The batch worker: `orders` in batches of ORDERS_BATCH_SIZE, one transaction each, until `stop`."""
    service = orders_service()

    def handle(records: list[SourceRecord]) -> None:
        consumer.ingest(service, records)

    (stream or order_stream()).run(handle, stop)


def reset() -> None:
    """Forget everything built so far (tests change the environment between cases)."""
    for provider in (settings, database, cache, counters, dead_letters, repository, orders_service):
        provider.cache_clear()
