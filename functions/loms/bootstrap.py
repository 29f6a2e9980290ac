"""The loms composition root: settings, pools, adapters and the service, built once on first use.
`bootstrap(...)` takes the dependencies to use (a test's fakes); what it is not given it builds from the
settings. The handlers in main.py use the current root, built from the environment when none was made.

Also what the dev server and deploy jobs call before serving: `migrate()` every shard, then `seed_stock()`;
and what runs beside the functions (functions.loms.relay_worker): `relay_forever(stop)`, the outbox relay
as a loop.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from functions.loms.adapters.events import NoEventTransport, SerializedPublisher
from functions.loms.adapters.pg_outbox import PgOutbox
from functions.loms.adapters.pg_readers import PgOrderReader, PgStockReader
from functions.loms.adapters.pg_shards import Shards, migrate_shards
from functions.loms.adapters.pg_sweep import PgSweepCoordinator
from functions.loms.adapters.pg_unit_of_work import PgUnitOfWork
from functions.loms.adapters.pg_unit_of_work import seed_stock as insert_missing_stock
from functions.loms.adapters.seed_file import read_stock_seed
from functions.loms.ports import (
    EventPublisher,
    OrderReader,
    Outbox,
    StockReader,
    SweepCoordinator,
    UnitOfWork,
)
from functions.loms.service import (
    ORDER_EVENTS_TOPIC,
    LomsService,
    OutboxRelay,
    RelayReport,
    StaleOrderSweeper,
)
from functions.loms.settings import LomsSettings
from shared_lib import lifecycle
from shared_lib.events import HttpDeliveryPublisher, KafkaPublisher, count_by_field
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.observability import metrics
from shared_lib.observability.outbox import OutboxWatch, watch_outbox
from shared_lib.postgres import ConnectionPool
from shared_lib.web import IdempotencyStore

SQL = Path(__file__).resolve().parents[2] / "sql"


class Root:
    """loms' objects; each built on first use unless given. `shards`: the shard pools the PostgreSQL adapters
    use (opened from the settings when not given); `outbox`: makes one outbox per relay (one per thread)."""

    def __init__(
        self,
        settings: LomsSettings | None = None,
        *,
        shards: Shards | None = None,
        units: UnitOfWork | None = None,
        orders: OrderReader | None = None,
        stock: StockReader | None = None,
        idempotency: IdempotencyStore | None = None,
        outbox: Callable[[], Outbox] | None = None,
        publisher: EventPublisher | None = None,
        coordinator: SweepCoordinator | None = None,
    ) -> None:
        self._settings, self._shards = settings, shards
        self._units, self._orders, self._stock, self._idempotency = units, orders, stock, idempotency
        self._outbox, self._publisher, self._coordinator = outbox, publisher, coordinator
        self._watch: OutboxWatch | None = None
        self._lock = threading.Lock()

    @functools.cached_property
    def settings(self) -> LomsSettings:
        return self._settings if self._settings is not None else LomsSettings()

    @functools.cached_property
    def shards(self) -> Shards:
        if self._shards is not None:
            return self._shards
        config = self.settings
        return Shards.open(config.shards(), config.replicas(), config.pool_size)

    def outbox_watch(self) -> OutboxWatch:
        """Every loms process's /metrics reads the outbox backlog of each shard (watched once per root)."""
        with self._lock:
            if self._watch is None:
                self._watch = watch_outbox(self.shards.primaries)
            return self._watch

    @functools.cached_property
    def loms_service(self) -> LomsService:
        if self._units is None:
            self.outbox_watch()
        return LomsService(
            units=self._units or PgUnitOfWork(self.shards),
            orders=self._orders or PgOrderReader(self.shards),
            stock=self._stock or PgStockReader(self.shards),
        )

    @functools.cached_property
    def idempotency(self) -> IdempotencyStore:
        """Keys live in shard 0, in a pool of their own: the store holds a connection while the action
        runs."""
        if self._idempotency is not None:
            return self._idempotency
        config = self.settings
        return PgIdempotencyStore(
            ConnectionPool(config.shards()[0], size=config.idempotency_pool_size, name="loms-idempotency")
        )

    @functools.cached_property
    def publisher(self) -> EventPublisher:
        """Kafka when LOMS_KAFKA_BOOTSTRAP is set, else HTTP delivery to LOMS_EVENT_SINKS, else no transport
        (the events wait in the outbox). One per process, lent to one relay at a time."""
        # what the transport acknowledges is counted by status: committed order status changes
        count_by_field(ORDER_EVENTS_TOPIC, metrics.ORDER_STATUS_CHANGES, "status")
        if self._publisher is not None:
            return self._publisher
        config = self.settings
        if config.kafka_bootstrap.strip():
            return SerializedPublisher(KafkaPublisher(config.kafka_bootstrap.strip(), client_id="loms-relay"))
        routes = config.event_routes()
        if routes:
            if (
                ORDER_EVENTS_TOPIC not in routes
            ):  # HTTP delivery to no URL "succeeds": the events would be lost
                raise ValueError(f"LOMS_EVENT_SINKS names no sink for {ORDER_EVENTS_TOPIC}")
            return SerializedPublisher(HttpDeliveryPublisher(routes))
        return NoEventTransport()

    def relay(self) -> OutboxRelay:
        """A new relay with its own database connections: one per thread, closed by its user."""
        config = self.settings
        if self._outbox is None:
            self.outbox_watch()
        return OutboxRelay(
            self._outbox()
            if self._outbox is not None
            else PgOutbox(config.shards(), gather_seconds=config.relay_gather_seconds),
            self.publisher,
            batch_size=config.relay_batch_size,
            poll_seconds=config.relay_poll_seconds,
            linger_seconds=config.relay_linger_seconds,
        )

    @functools.cached_property
    def sweeper(self) -> StaleOrderSweeper:
        config = self.settings
        return StaleOrderSweeper(
            units=self._units or PgUnitOfWork(self.shards),
            coordinator=self._coordinator or PgSweepCoordinator(self.shards),
            older_than=timedelta(seconds=config.stale_after_seconds),
            batch_size=config.sweep_batch_size,
            retention=timedelta(seconds=retention)
            if (retention := config.outbox_retention_seconds)
            else None,
            prune_batch=config.outbox_prune_batch_size,
        )

    def close(self) -> None:
        """Close the pools this root opened (none when nothing was built; given shards are the giver's), and
        stop reading their outbox at scrapes."""
        if self._watch is not None:
            metrics.off_scrape(self._watch)
        if self._shards is None and "shards" in self.__dict__:
            self.shards.close()
        store = self.__dict__.get("idempotency")
        if self._idempotency is None and isinstance(store, PgIdempotencyStore):
            store.pool.close()


_roots = lifecycle.Current(Root, Root.close)
bootstrap = _roots.bootstrap  # a root on the given dependencies, made the one in use
root = _roots.root
reset = _roots.reset


def settings() -> LomsSettings:
    return root().settings


def shards() -> Shards:
    return root().shards


def loms_service() -> LomsService:
    return root().loms_service


def idempotency() -> IdempotencyStore:
    return root().idempotency


def publisher() -> EventPublisher:
    return root().publisher


def relay() -> OutboxRelay:
    """A new relay with its own database connections: one per thread, closed by its user."""
    return root().relay()


def sweeper() -> StaleOrderSweeper:
    return root().sweeper


def relay_forever(stop: threading.Event, outbox_relay: OutboxRelay | None = None) -> RelayReport:
    """The relay as a loop until `stop` is set (noticed within LOMS_RELAY_POLL_SECONDS): drain, wait for a
    NOTIFY or the poll timeout, repeat; failures back off and retry. `outbox_relay`: one made by `relay()`
    (a new one when not given); closed on return. What functions.loms.relay_worker runs."""
    outbox_relay = outbox_relay or relay()
    try:
        return outbox_relay.run_until(stop)
    finally:
        outbox_relay.close()


def migrate() -> list[str]:
    """Apply sql/shared and sql/loms to every shard (each shard has the same schema)."""
    return migrate_shards(LomsSettings().shards(), [SQL / "shared", SQL / "loms"])


def seed_stock() -> int:
    """Insert the seed stock rows shard 0 lacks; never resets existing stock. Returns how many were added."""
    config = LomsSettings()
    db = Shards.open(config.shards()[:1], [], pool_size=1)
    try:
        return insert_missing_stock(db, read_stock_seed(config.stock_seed_path))
    finally:
        db.close()
