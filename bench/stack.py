"""A throwaway shop for benchmarks: its own PostgreSQL and dev-server processes on shifted ports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from bench.common import free_port, scratch_dir
from functions import devserver, table
from shared_lib.devtools.kafka_server import KafkaServer
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.pg_server import PgServer

PORT_OFFSET = 2000


@dataclass
class BenchShop:
    pg: PgServer
    environment: dict[str, str]
    stack: devserver.Stack | None
    port_offset: int = PORT_OFFSET

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{table.SERVICES[service].port + self.port_offset}"


@contextlib.contextmanager
def postgres(durable: bool = True) -> Iterator[PgServer]:
    """A fresh server; durable=True keeps fsync on, as a real deployment would."""
    data = scratch_dir("shop-bench-pg-")
    server = PgServer(data / "data", free_port(), fast_unsafe=not durable)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def kafka_broker(topics: Mapping[str, int] = table.TOPICS) -> Iterator[KafkaServer]:
    """A one-node broker on free ports with `topics` (name → partitions; default: the shop's)."""
    data = scratch_dir("shop-bench-kafka-")
    port = free_port()
    server = KafkaServer(data, port, free_port())
    server.start()
    server.create_topics(dict(topics))
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def memcached() -> Iterator[MemcachedServer]:
    server = MemcachedServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class SampleOrder:
    pg: PgServer
    cache: MemcachedServer
    environment: dict[str, str]  # the services' environment for them, the databases prepared
    uid: str  # the sample order's, loaded


@contextlib.contextmanager
def sample_order() -> Iterator[SampleOrder]:
    """PostgreSQL and Memcached of their own, the services' environment for them with the databases prepared,
    and the sample order loaded."""
    with postgres() as pg, memcached() as cache:
        environment = devserver.service_environment(pg.dsn, memcached=cache.address)
        devserver.prepare_databases(pg.dsn, environment)
        yield SampleOrder(
            pg, cache, environment, devserver.load_sample_order(environment["ORDERS_DATABASE_URL"])
        )


@contextlib.contextmanager
def shop(
    services: tuple[str, ...],
    overrides: Mapping[str, str] | None = None,
    workers: int = 1,
    durable: bool = True,
    real_events: bool = False,
    relay: bool = True,
    port_offset: int = PORT_OFFSET,
) -> Iterator[BenchShop]:
    """The dev server for `services`; real_events=True adds a real Kafka broker and Memcached; relay=False
    leaves loms' outbox relay out (events wait in the outbox). Several shops side by side need their own
    port_offset."""
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres(durable))
        kafka = stack.enter_context(kafka_broker()).bootstrap if real_events else None
        cache = stack.enter_context(memcached()).address if real_events else None
        environment = {
            **devserver.service_environment(pg.dsn, port_offset, kafka=kafka, memcached=cache),
            **(overrides or {}),
        }
        devserver.prepare_databases(pg.dsn, environment)
        processes = devserver.Stack(
            environment,
            services=services,
            workers=workers,
            without=() if relay else ("outbox_relay",),
            port_offset=port_offset,
            log_dir=scratch_dir("shop-bench-logs-"),
        )
        saved = dict(os.environ)
        try:
            processes.start()
            yield BenchShop(pg, environment, processes, port_offset)
        finally:
            processes.stop()
            os.environ.clear()
            os.environ.update(saved)
