"""loms on the session's real PostgreSQL: one shard, or two shards (stock in the first).

Helpers arrange stock rows and look at what the databases hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from functions.loms.adapters.postgres import PgOrderReader, PgStockReader, PgUnitOfWork, Shards
from functions.loms.domain import StockLevel
from functions.loms.service import LomsService

MakeDatabase = Callable[[str], str]


class PgLoms:
    """The real adapters wired into the service, plus what a test needs to arrange and inspect the state."""

    def __init__(self, shards: Shards, home_shard: int = 0) -> None:
        self.shards = shards
        self.home_shard = home_shard  # where the orders of `user()` ids go
        self.units = PgUnitOfWork(shards)
        self.service = LomsService(
            units=self.units, orders=PgOrderReader(shards), stock=PgStockReader(shards)
        )

    @property
    def shard_count(self) -> int:
        return self.shards.count

    def put_stock(self, sku: int, total_count: int, reserved: int = 0) -> None:
        self.shards.stock.run(
            "INSERT INTO stocks (sku, total_count, reserved) VALUES (:s, :t, :r)"
            " ON CONFLICT (sku) DO UPDATE SET total_count = :t, reserved = :r",
            s=sku,
            t=total_count,
            r=reserved,
        )

    def level(self, sku: int) -> StockLevel | None:
        rows = self.shards.stock.run("SELECT total_count, reserved FROM stocks WHERE sku = :s", s=sku)
        return StockLevel(sku, rows[0][0], rows[0][1]) if rows else None

    def reservations(self, order_id: int) -> dict[int, int]:
        rows = self.shards.stock.run("SELECT sku, count FROM reservations WHERE order_id = :o", o=order_id)
        return {sku: count for sku, count in rows}

    def orders_of(self, user_id: int) -> list[tuple[int, str]]:
        """(order id, status) of every order of the user, from the shard the user's orders go to."""
        pool = self.shards.primaries[user_id % self.shard_count]
        rows = pool.run("SELECT order_id, status FROM orders WHERE user_id = :u ORDER BY order_id", u=user_id)
        return [(order_id, status) for order_id, status in rows]

    def user(self, base: int) -> int:
        """A user id near `base` (a unique id) whose new orders go to the home shard."""
        return base - base % self.shard_count + self.home_shard


@pytest.fixture(scope="session")
def one_shard(make_database: MakeDatabase) -> Iterator[Shards]:
    shards = Shards.open([make_database("loms")], [], pool_size=10)
    yield shards
    shards.close()


@pytest.fixture(scope="session")
def two_shards(make_database: MakeDatabase) -> Iterator[Shards]:
    shards = Shards.open([make_database("loms"), make_database("loms")], [], pool_size=10)
    yield shards
    shards.close()


@pytest.fixture(params=["1-shard", "2-shards-order-with-stock", "2-shards-order-apart"])
def loms(request: pytest.FixtureRequest) -> PgLoms:
    """Orders in the stock's database (one transaction), and in another shard (two transactions)."""
    if request.param == "1-shard":
        return PgLoms(request.getfixturevalue("one_shard"))
    return PgLoms(request.getfixturevalue("two_shards"), home_shard=0 if "with-stock" in request.param else 1)
