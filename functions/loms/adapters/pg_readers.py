"""loms' possibly stale reads on PostgreSQL (order_info, stock_info): a shard's replica first, its primary
when there is none or it has not caught up. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from functions.loms.adapters.pg_shards import Shards
from functions.loms.adapters.pg_unit_of_work import load_order
from functions.loms.domain import Order, StockLevel
from shared_lib.errors import TransientError
from shared_lib.postgres import Connection, ConnectionPool

T = TypeVar("T")


class PgOrderReader:
    """order_info's reads: the replica of the order's shard if any, else (or on a miss) the primary."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    def get(self, order_id: int) -> Order | None:
        index = self.shards.index_of(order_id)
        return _read(
            self.shards.primaries[index], self.shards.replicas[index], lambda conn: load_order(conn, order_id)
        )


class PgStockReader:
    """stock_info's reads: shard 0's replica when there is one, else (or on a miss) shard 0 itself."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    def get(self, sku: int) -> StockLevel | None:
        def query(conn: Connection) -> StockLevel | None:
            rows = conn.run("SELECT total_count, reserved FROM stocks WHERE sku = :s", s=sku)
            return StockLevel(sku, int(rows[0][0]), int(rows[0][1])) if rows else None

        return _read(self.shards.stock, self.shards.replicas[0], query)


def _read(
    primary: ConnectionPool, replica: ConnectionPool | None, query: Callable[[Connection], T | None]
) -> T | None:
    """Ask the replica first; a replica that is down or has not caught up yet falls back to the primary."""
    if replica is not None:
        try:
            with replica.connection() as conn:
                found = query(conn)
            if found is not None:
                return found
        except TransientError:
            pass
    with primary.connection() as conn:
        return query(conn)
