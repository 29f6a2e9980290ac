"""The order viewer's integration fixtures: a fresh database per module, the real functions-framework apps
configured through ORDERS_*, and helpers to produce to and read from the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from functions.orders import bootstrap
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase

MAIN = "functions/orders/main.py"
TARGETS = ("ingest_order", "get_order", "order_page")


@pytest.fixture(scope="module")
def orders_dsn(make_database: MakeDatabase) -> str:
    return make_database("orders")


@pytest.fixture(scope="module")
def orders_pool(orders_dsn: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(orders_dsn, size=4, name="orders-test")
    yield pool
    pool.close()


Apps = Callable[..., dict[str, FlaskClient]]


def close_built() -> None:
    """Close what the previous build opened, so tests do not pile up connections and producers."""
    if bootstrap.database.cache_info().currsize:
        bootstrap.database().close()
    if bootstrap.dead_letters.cache_info().currsize:
        closer = getattr(bootstrap.dead_letters(), "close", None)
        if closer is not None:
            closer()


@pytest.fixture
def orders_apps(monkeypatch: pytest.MonkeyPatch, orders_dsn: str) -> Iterator[Apps]:
    """orders_apps(ORDERS_…=value, …) -> {target: test client}, bootstrap built from that environment."""

    def build(**env: str) -> dict[str, FlaskClient]:
        monkeypatch.setenv("ORDERS_DATABASE_URL", orders_dsn)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        close_built()
        bootstrap.reset()
        return {
            target: functions_framework.create_app(target=target, source=MAIN).test_client()
            for target in TARGETS
        }

    yield build
    close_built()
    bootstrap.reset()


def produce(bootstrap_servers: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close(5)


def read_topic(bootstrap_servers: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every record of `topic` from the beginning, once at least `expected` arrived (or the time is up), plus
    a short grace to catch any extra one."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [0])]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        grace: float | None = None
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= expected:
                grace = grace or time.monotonic() + 1.0
                if time.monotonic() > grace:
                    break
        return records
    finally:
        consumer.close()
