"""The loms composition root: settings, pools, adapters and the service, built once on first use.

Also what the dev server and deploy jobs call before serving: `migrate()` every shard, then `seed_stock()`;
and what runs beside the functions (functions.loms.relay_worker): `relay_forever(stop)`, the outbox relay
as a loop.
"""

from __future__ import annotations

import functools
import threading
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
from functions.loms.ports import EventPublisher
from functions.loms.service import (
    ORDER_EVENTS_TOPIC,
    LomsService,
    OutboxRelay,
    RelayReport,
    StaleOrderSweeper,
)
from functions.loms.settings import LomsSettings
from shared_lib.events import HttpDeliveryPublisher, KafkaPublisher, count_by_field
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.observability import metrics
from shared_lib.observability.outbox import OutboxWatch, watch_outbox
from shared_lib.postgres import ConnectionPool

SQL = Path(__file__).resolve().parents[2] / "sql"


@functools.cache
def settings() -> LomsSettings:
    return LomsSettings()


@functools.cache
def shards() -> Shards:
    config = settings()
    return Shards.open(config.shards(), config.replicas(), config.pool_size)


@functools.cache
def outbox_watch() -> OutboxWatch:
    """Every loms process's /metrics reads the outbox backlog of each shard."""
    return watch_outbox(shards().primaries)


@functools.cache
def loms_service() -> LomsService:
    outbox_watch()
    return LomsService(
        units=PgUnitOfWork(shards()), orders=PgOrderReader(shards()), stock=PgStockReader(shards())
    )


@functools.cache
def idempotency() -> PgIdempotencyStore:
    """Keys live in shard 0, in a pool of their own: the store holds a connection while the action runs."""
    config = settings()
    return PgIdempotencyStore(
        ConnectionPool(config.shards()[0], size=config.idempotency_pool_size, name="loms-idempotency")
    )


@functools.cache
def publisher() -> EventPublisher:
    """Kafka when LOMS_KAFKA_BOOTSTRAP is set, else HTTP delivery to LOMS_EVENT_SINKS, else no transport (the
    events wait in the outbox). One per process, lent to one relay at a time."""
    config = settings()
    # what the transport acknowledges is counted by status: committed order status changes
    count_by_field(ORDER_EVENTS_TOPIC, metrics.ORDER_STATUS_CHANGES, "status")
    if config.kafka_bootstrap.strip():
        return SerializedPublisher(KafkaPublisher(config.kafka_bootstrap.strip(), client_id="loms-relay"))
    routes = config.event_routes()
    if routes:
        if ORDER_EVENTS_TOPIC not in routes:  # HTTP delivery to no URL "succeeds": the events would be lost
            raise ValueError(f"LOMS_EVENT_SINKS names no sink for {ORDER_EVENTS_TOPIC}")
        return SerializedPublisher(HttpDeliveryPublisher(routes))
    return NoEventTransport()


def relay() -> OutboxRelay:
    """A new relay with its own database connections: one per thread, closed by its user."""
    config = settings()
    outbox_watch()
    return OutboxRelay(
        PgOutbox(config.shards()),
        publisher(),
        batch_size=config.relay_batch_size,
        poll_seconds=config.relay_poll_seconds,
        linger_seconds=config.relay_linger_seconds,
    )


def relay_forever(stop: threading.Event, outbox_relay: OutboxRelay | None = None) -> RelayReport:
    """The relay as a loop until `stop` is set (noticed within LOMS_RELAY_POLL_SECONDS): drain, wait for a
    NOTIFY or the poll timeout, repeat; failures back off and retry. `outbox_relay`: one made by `relay()`
    (a new one when not given); closed on return. What functions.loms.relay_worker runs."""
    outbox_relay = outbox_relay or relay()
    try:
        return outbox_relay.run_until(stop)
    finally:
        outbox_relay.close()


@functools.cache
def sweeper() -> StaleOrderSweeper:
    config = settings()
    return StaleOrderSweeper(
        units=PgUnitOfWork(shards()),
        coordinator=PgSweepCoordinator(shards()),
        older_than=timedelta(seconds=config.stale_after_seconds),
        batch_size=config.sweep_batch_size,
        retention=timedelta(seconds=retention) if (retention := config.outbox_retention_seconds) else None,
        prune_batch=config.outbox_prune_batch_size,
    )


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
