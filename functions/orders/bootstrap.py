"""The order viewer's composition root: settings, the pool, the cache, the dead-letter publisher and the
service, built once on first use. Also what the dev server and deploy jobs call: `migrate()`, and what the
batch worker runs: `ingest_forever(stop)`.

`bootstrap(...)` takes the dependencies to use (a test's fakes); what it is not given it builds from the
settings. The handlers in main.py use the current root, built from the environment when none was made.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from functions.orders import consumer
from functions.orders.adapters.kafka import KafkaDeadLetters, KafkaOrderStream, LogDeadLetters
from functions.orders.adapters.postgres import PgOrderRepository
from functions.orders.domain import SourceRecord
from functions.orders.ports import DeadLetters, OrderRepository
from functions.orders.service import OrdersService
from functions.orders.settings import OrdersSettings
from shared_lib import lifecycle, postgres
from shared_lib.cache import EncodedCache, InProcessCache, shared_or_local
from shared_lib.counters import InProcessCounters
from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool

log = logging.getLogger(__name__)

SQL = Path(__file__).resolve().parents[2] / "sql"
CACHE_PREFIX = "orders:"
LOCAL_CACHE = "orders-local"  # the in-process tier's name in metrics (shop_cache_requests_total{cache})


class ExportedCounters(InProcessCounters):
    """The in-process ingest counters, each also exported: stored orders as shop_orders_ingested_total, every
    other outcome (duplicate, conflict, invalid) as shop_orders_rejected_total{reason}."""

    def increment(self, name: str, by: int = 1) -> None:
        super().increment(name, by)
        if name == "stored":
            metrics.ORDERS_INGESTED.inc(by)
        else:
            metrics.ORDERS_REJECTED.labels(name).inc(by)


class Root:
    """The order viewer's objects; each built on first use unless given. `clock`: the service's now (UTC)."""

    def __init__(
        self,
        settings: OrdersSettings | None = None,
        *,
        orders: OrderRepository | None = None,
        dead_letters: DeadLetters | None = None,
        cache: EncodedCache | None = None,
        counters: InProcessCounters | None = None,
        clock: Callable[[], datetime] | None = None,
        local_cache: EncodedCache | None = None,
    ) -> None:
        self._settings, self._orders, self._dead_letters = settings, orders, dead_letters
        self._cache, self._counters, self._clock = cache, counters, clock
        self._local_cache = local_cache

    @functools.cached_property
    def settings(self) -> OrdersSettings:
        return self._settings if self._settings is not None else OrdersSettings()

    @functools.cached_property
    def database(self) -> ConnectionPool:
        pool = ConnectionPool(self.settings.database_url, size=self.settings.pool_size, name="orders")
        lifecycle.on_shutdown(pool.close)
        return pool

    @functools.cached_property
    def cache(self) -> EncodedCache:
        return (
            self._cache if self._cache is not None else shared_or_local(self.settings.memcached, CACHE_PREFIX)
        )

    @functools.cached_property
    def local_cache(self) -> EncodedCache | None:
        """Found orders kept in this process in front of the shared cache; None when the settings give it no
        entries, or when the cache is itself in this process (no Memcached: a second copy would only cost
        memory)."""
        if self._local_cache is not None:
            return self._local_cache
        config = self.settings
        if config.local_cache_entries == 0 or isinstance(self.cache, InProcessCache):
            return None
        entries, size = config.local_cache_entries, config.local_cache_bytes
        return InProcessCache(entries, name=LOCAL_CACHE, max_bytes=size)

    @functools.cached_property
    def counters(self) -> InProcessCounters:
        return self._counters if self._counters is not None else ExportedCounters()

    @functools.cached_property
    def dead_letters(self) -> DeadLetters:
        if self._dead_letters is not None:
            return self._dead_letters
        config = self.settings
        if not config.kafka_bootstrap.strip():
            return LogDeadLetters()
        publisher = KafkaDeadLetters(config.kafka_bootstrap, config.dead_letter_topic)
        lifecycle.on_shutdown(publisher.close)
        return publisher

    @functools.cached_property
    def repository(self) -> OrderRepository:
        return self._orders if self._orders is not None else PgOrderRepository(self.database)

    @functools.cached_property
    def orders_service(self) -> OrdersService:
        config = self.settings
        service = OrdersService(
            orders=self.repository,
            dead_letters=self.dead_letters,
            cache=self.cache,
            counters=self.counters,
            cache_ttl_seconds=config.cache_ttl_seconds,
            warm_cache=config.warm_cache,
            future_skew=timedelta(seconds=config.future_skew_seconds),
            recent_count=config.recent_count,
            local=self.local_cache,
        )
        return service if self._clock is None else dataclasses.replace(service, clock=self._clock)

    def order_stream(self) -> KafkaOrderStream:
        config = self.settings
        if not config.kafka_bootstrap.strip():
            raise RuntimeError("the ingest worker needs ORDERS_KAFKA_BOOTSTRAP")
        return KafkaOrderStream(
            config.kafka_bootstrap,
            config.topic,
            config.consumer_group,
            batch_size=config.batch_size,
            dead_letter_topic=config.dead_letter_topic,  # the DLQ-size metric measures where letters go
        )

    def close(self) -> None:
        """Close the pool and the dead-letter producer this root opened (none when nothing was built)."""
        if "database" in self.__dict__:
            self.database.close()
        letters = self.__dict__.get("dead_letters")
        if isinstance(letters, KafkaDeadLetters):
            letters.close()


_roots = lifecycle.Current(Root, Root.close)
bootstrap = _roots.bootstrap  # a root on the given dependencies, made the one in use
root = _roots.root
reset = _roots.reset


def settings() -> OrdersSettings:
    return root().settings


def counters() -> InProcessCounters:
    return root().counters


def orders_service() -> OrdersService:
    return root().orders_service


def api_url() -> str:
    return root().settings.api_url


def order_stream() -> KafkaOrderStream:
    return root().order_stream()


def migrate() -> list[str]:
    """Apply sql/shared and sql/orders to ORDERS_DATABASE_URL (the database must exist)."""
    return postgres.migrate(OrdersSettings().database_url, [SQL / "shared", SQL / "orders"])


def ingest_forever(stop: threading.Event, stream: KafkaOrderStream | None = None) -> None:
    """The batch worker: `orders` in batches of ORDERS_BATCH_SIZE, one transaction each, until `stop`."""
    service = orders_service()

    def handle(records: list[SourceRecord]) -> None:
        consumer.ingest(service, records)

    (stream or order_stream()).run(handle, stop)
