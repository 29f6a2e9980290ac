"""The order viewer's integration fixtures: a fresh database per module, the real functions-framework apps
configured through ORDERS_*, the ingest worker's handling of a batch, and helpers to produce to and read from
the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from kafka import KafkaProducer

from functions.orders import bootstrap, consumer
from functions.orders.domain import SourceRecord
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase
from tests.fixtures.kafka import read_records

MAIN = "functions/orders/main.py"
TARGETS = ("get_order", "order_page")


@pytest.fixture(scope="module")
def orders_dsn(make_database: MakeDatabase) -> str:
    return make_database("orders")


@pytest.fixture(scope="module")
def orders_pool(orders_dsn: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(orders_dsn, size=4, name="orders-test")
    yield pool
    pool.close()


Apps = Callable[..., dict[str, FlaskClient]]


@pytest.fixture
def orders_apps(monkeypatch: pytest.MonkeyPatch, orders_dsn: str) -> Iterator[Apps]:
    """orders_apps(ORDERS_…=value, …) -> {target: test client}, bootstrap built from that environment."""

    def build(**env: str) -> dict[str, FlaskClient]:
        monkeypatch.setenv("ORDERS_DATABASE_URL", orders_dsn)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        bootstrap.reset()  # closes what the previous build opened: tests do not pile up connections
        return {
            target: functions_framework.create_app(target=target, source=MAIN).test_client()
            for target in TARGETS
        }

    yield build
    bootstrap.reset()


def ingest(value: bytes, offset: int = 1) -> None:
    """What the ingest worker does with a polled batch (ingest_forever's handler), for one record, through the
    root the last orders_apps build made."""
    record = SourceRecord(value=value, topic="orders", partition=0, offset=offset)
    consumer.ingest(bootstrap.orders_service(), [record])


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
    enough: Callable[[list[Any]], bool] = lambda records: len(records) >= expected  # noqa: E731
    return read_records(bootstrap_servers, topic, enough, timeout, grace=1.0)
