"""What loms sends PostgreSQL per create_order: the statements each shard's connections run, counted on the
real adapters against the real databases (a pool that hands out its connections wrapped to note each `run`).

A create whose order lives with the stock (shard 0) is one statement: no BEGIN, no COMMIT, one round trip
(issue 14: it was six statements and eight round trips). An order apart from the stock keeps its two
transactions, one statement per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from functions.loms.adapters.pg_shards import Shards
from functions.loms.domain import InsufficientStockError, Item, OrderStatus, StockLevel
from shared_lib.postgres import Connection, ConnectionPool
from tests.conftest import MakeDatabase
from tests.integration.loms.conftest import PgLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]


class _Noted:
    """A connection that notes the first word of every statement it runs, and is otherwise the connection."""

    def __init__(self, conn: Connection, notes: list[str]) -> None:
        self._conn = conn
        self._notes = notes

    def run(self, sql: str, **params: Any) -> Any:
        self._notes.append(sql.split(None, 1)[0].upper())
        return self._conn.run(sql, **params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class NotingPool(ConnectionPool):
    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, size=4)
        self.notes: list[str] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        with super().connection() as conn:
            yield _Noted(conn, self.notes)


@pytest.fixture(scope="module")
def two_noted_shards(make_database: MakeDatabase) -> Iterator[tuple[NotingPool, NotingPool]]:
    pools = (NotingPool(make_database("loms")), NotingPool(make_database("loms")))
    yield pools
    for pool in pools:
        pool.close()


def test_a_create_with_the_stock_is_one_statement_and_one_apart_is_a_statement_per_step(
    two_noted_shards: tuple[NotingPool, NotingPool], unique_id: UniqueId
) -> None:
    stock, other = two_noted_shards
    loms = PgLoms(Shards((stock, other), (None, None)))
    sku = unique_id()
    loms.put_stock(sku, 3)
    with_stock, apart = unique_id() * 2, unique_id() * 2 + 1

    stock.notes.clear()
    placed = loms.service.create_order(with_stock, [Item(sku, 2)])
    with pytest.raises(InsufficientStockError):
        loms.service.create_order(with_stock, [Item(sku, 2)])
    assert stock.notes == ["WITH", "WITH"]  # one statement each, autocommitted: no BEGIN, no COMMIT

    stock.notes.clear()
    kept = loms.service.create_order(apart, [Item(sku, 1)])
    assert other.notes == ["BEGIN", "WITH", "WITH", "COMMIT"]  # the order, its status change
    assert stock.notes == ["BEGIN", "WITH", "COMMIT"]  # the reservation

    assert loms.service.order_info(placed).status is OrderStatus.AWAITING_PAYMENT
    assert loms.service.order_info(kept).status is OrderStatus.AWAITING_PAYMENT
    assert loms.level(sku) == StockLevel(sku, 3, 3)
