"""loms on PostgreSQL: orders sharded by id over one or more databases, the stock in shard 0, stale reads.

The only module of loms that speaks SQL. Nothing here decides a business rule; the service does.

Sharding. Shard `i` of `n` allocates order ids `nextval('order_seq') * n + i`, so an order's shard is
`order_id % n` (with one shard the ids are 1, 2, 3 …). A new order goes to shard `user_id % n`: one user's
orders stay together (a later "orders of a user" reads one shard), and the choice is deterministic, so tests
can aim an order at either shard. The shard count is part of the data: changing it needs a data migration.

Transactions. A unit of work is one transaction on the order's shard. The stock lives in shard 0:
- order in shard 0: the stock work runs on the same connection, so create, pay and cancel are each one
  transaction and fully atomic;
- order in another shard: the stock work runs in its own transaction on shard 0, opened on first use while the
  order's transaction is open, and committed just before it. Residual window: a crash (or a lost connection)
  between the two commits leaves the stock side committed and the order side not:
  - create: reservations of an order id that no order row has. Ids are never reused, so a sweep can find
    them (no order row after a grace period) and release them; until then that stock is held.
  - pay: the sale is made but the order still awaits payment. A retried pay finds no reservations left and
    completes; a cancel instead would mark the order cancelled with its stock still sold.
  - cancel: the stock is released but the order still awaits payment. A retried cancel completes; a pay
    instead would mark the order paid without lowering the total (an oversell of that order's items).
  Either case shows as an order awaiting payment without reservation rows, which a reconciliation can find.
Row locks are always taken in the same order (the order row first, then stock rows ascending by SKU), so
concurrent units wait for each other but never deadlock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from functions.loms.domain import InsufficientStockError, Item, Order, OrderStatus, StockLevel
from shared_lib.errors import TransientError
from shared_lib.postgres import Connection, ConnectionPool, migrate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Shards:
    """One pool per shard's primary, and per replica where one is configured. Shard 0 also holds the stock."""

    primaries: tuple[ConnectionPool, ...]
    replicas: tuple[ConnectionPool | None, ...]

    @classmethod
    def open(cls, dsns: Sequence[str], replica_dsns: Sequence[str | None], pool_size: int) -> Shards:
        if not dsns:
            raise ValueError("loms needs at least one shard DSN")
        if replica_dsns and len(replica_dsns) != len(dsns):
            raise ValueError("give one replica DSN per shard (an empty entry: no replica for that shard)")
        primaries = tuple(
            ConnectionPool(d, size=pool_size, name=f"loms-shard{i}") for i, d in enumerate(dsns)
        )
        replicas = tuple(
            None if d is None else ConnectionPool(d, size=pool_size, name=f"loms-replica{i}")
            for i, d in enumerate(replica_dsns or [None] * len(dsns))
        )
        return cls(primaries, replicas)

    @property
    def count(self) -> int:
        return len(self.primaries)

    @property
    def stock(self) -> ConnectionPool:
        return self.primaries[0]

    def index_of(self, order_id: int) -> int:
        return order_id % self.count

    def close(self) -> None:
        for pool in (*self.primaries, *self.replicas):
            if pool is not None:
                pool.close()


def migrate_shards(dsns: Sequence[str], directories: Sequence[Path]) -> list[str]:
    """Every shard gets the same migrations; returns what was applied, prefixed with the shard index."""
    return [f"{i}:{name}" for i, dsn in enumerate(dsns) for name in migrate(dsn, directories)]


# --- units of work ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgOrderUnit:
    orders: PgOrderRepository
    stock: PgStockRepository


class PgUnitOfWork:
    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    def for_new_order(self, user_id: int) -> contextlib.AbstractContextManager[PgOrderUnit]:
        return self._unit(user_id % self.shards.count)

    def for_order(self, order_id: int) -> contextlib.AbstractContextManager[PgOrderUnit]:
        return self._unit(self.shards.index_of(order_id))

    @contextlib.contextmanager
    def _unit(self, index: int) -> Iterator[PgOrderUnit]:
        # The stack closes first: the stock transaction (if any) commits before the order's transaction.
        with self.shards.primaries[index].transaction() as conn, contextlib.ExitStack() as stack:
            if index == 0:
                stock_conn: Callable[[], Connection] = lambda: conn  # noqa: E731
            else:
                stock_conn = _Lazy(lambda: stack.enter_context(self.shards.stock.transaction()))
            yield PgOrderUnit(
                PgOrderRepository(conn, index, self.shards.count), PgStockRepository(stock_conn)
            )


class _Lazy:
    """Opens the stock transaction on first use: a unit that never touches stock never waits for shard 0."""

    def __init__(self, open_connection: Callable[[], Connection]) -> None:
        self._open = open_connection
        self._conn: Connection | None = None

    def __call__(self) -> Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn


# --- orders -------------------------------------------------------------------------------------------


class PgOrderRepository:
    """Orders in one shard, inside the unit's transaction."""

    def __init__(self, conn: Connection, shard_index: int, shard_count: int) -> None:
        self.conn = conn
        self.shard_index = shard_index
        self.shard_count = shard_count

    def add(self, user_id: int, items: tuple[Item, ...]) -> Order:
        sequence = self.conn.run("SELECT nextval('order_seq')")[0][0]
        order_id = int(sequence) * self.shard_count + self.shard_index
        self.conn.run(
            "INSERT INTO orders (order_id, user_id, status) VALUES (:o, :u, :s)",
            o=order_id,
            u=user_id,
            s=OrderStatus.NEW.value,
        )
        self.conn.run(
            "INSERT INTO order_items (order_id, sku, count)"
            " SELECT :o, t.sku, t.count FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[]))"
            " AS t(sku, count)",
            o=order_id,
            **_arrays(items),
        )
        return Order(order_id, user_id, OrderStatus.NEW, items)

    def get_for_update(self, order_id: int) -> Order | None:
        return load_order(self.conn, order_id, lock=True)

    def change_status(self, order: Order, status: OrderStatus) -> Order:
        changed = order.moved_to(status)
        self.conn.run(
            "UPDATE orders SET status = :s, updated_at = now() WHERE order_id = :o",
            s=status.value,
            o=order.order_id,
        )
        return changed


def load_order(conn: Connection, order_id: int, lock: bool = False) -> Order | None:
    """One statement, so a reader sees the order and its items from one snapshot."""
    rows = conn.run(
        "SELECT o.user_id, o.status, i.sku, i.count FROM orders o"
        " LEFT JOIN order_items i ON i.order_id = o.order_id"
        " WHERE o.order_id = :o ORDER BY i.sku" + (" FOR UPDATE OF o" if lock else ""),
        o=order_id,
    )
    if not rows:
        return None
    items = tuple(Item(int(sku), int(count)) for _, _, sku, count in rows if sku is not None)
    return Order(order_id, int(rows[0][0]), OrderStatus(rows[0][1]), items)


# --- stock --------------------------------------------------------------------------------------------


class PgStockRepository:
    """The stock in shard 0, on the connection of the unit's stock transaction."""

    def __init__(self, conn: Callable[[], Connection]) -> None:
        self._conn = conn

    def reserve(self, order_id: int, items: tuple[Item, ...]) -> None:
        conn = self._conn()
        # A savepoint makes the reservation all-or-nothing also when it shares the order's transaction.
        conn.run("SAVEPOINT reserve")
        try:
            levels = _lock(conn, [item.sku for item in items])
            for item in items:
                level = levels.get(item.sku)
                if level is None or level.total_count - level.reserved < item.count:
                    raise InsufficientStockError(
                        item.sku, item.count, None if level is None else level.available
                    )
            conn.run(
                "UPDATE stocks SET reserved = stocks.reserved + t.count"
                " FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[])) AS t(sku, count)"
                " WHERE stocks.sku = t.sku AND stocks.total_count - stocks.reserved >= t.count",
                **_arrays(items),
            )
            if conn.row_count != len(
                items
            ):  # cannot happen under the row locks; never half-reserve if it does
                raise RuntimeError(
                    f"reserved {conn.row_count} of {len(items)} stock rows of order {order_id}"
                )
            conn.run(
                "INSERT INTO reservations (order_id, sku, count)"
                " SELECT :o, t.sku, t.count FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[]))"
                " AS t(sku, count)",
                o=order_id,
                **_arrays(items),
            )
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection fails the whole unit anyway
                conn.run("ROLLBACK TO SAVEPOINT reserve")
            raise
        conn.run("RELEASE SAVEPOINT reserve")

    def consume(self, order_id: int) -> None:
        self._settle(
            order_id, "total_count = stocks.total_count - t.count, reserved = stocks.reserved - t.count"
        )

    def release(self, order_id: int) -> None:
        self._settle(order_id, "reserved = stocks.reserved - t.count")

    def _settle(self, order_id: int, assignments: str) -> None:
        """Delete the order's reservations and apply them to their stock rows; none left: nothing to do."""
        conn = self._conn()
        rows = conn.run("DELETE FROM reservations WHERE order_id = :o RETURNING sku, count", o=order_id)
        if not rows:
            return
        items = tuple(sorted((Item(int(sku), int(count)) for sku, count in rows), key=lambda i: i.sku))
        _lock(conn, [item.sku for item in items])
        conn.run(
            f"UPDATE stocks SET {assignments}"
            " FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[])) AS t(sku, count)"
            " WHERE stocks.sku = t.sku",
            **_arrays(items),
        )

    def insert_missing(self, levels: Sequence[StockLevel]) -> int:
        """Seed rows for SKUs that have none; existing rows stay as they are. Returns how many were added."""
        conn = self._conn()
        conn.run(
            "INSERT INTO stocks (sku, total_count, reserved)"
            " SELECT * FROM unnest("
            "CAST(:skus AS bigint[]), CAST(:totals AS bigint[]), CAST(:reserved AS bigint[]))"
            " ON CONFLICT (sku) DO NOTHING",
            skus=[level.sku for level in levels],
            totals=[level.total_count for level in levels],
            reserved=[level.reserved for level in levels],
        )
        return int(conn.row_count)


def _lock(conn: Connection, skus: list[int]) -> dict[int, StockLevel]:
    """Lock the stock rows of these SKUs in ascending SKU order (the locks follow the sort)."""
    rows = conn.run(
        "SELECT sku, total_count, reserved FROM stocks WHERE sku = ANY(CAST(:skus AS bigint[]))"
        " ORDER BY sku FOR UPDATE",
        skus=skus,
    )
    return {int(sku): StockLevel(int(sku), int(total), int(reserved)) for sku, total, reserved in rows}


def _arrays(items: Sequence[Item]) -> dict[str, Any]:
    return {"skus": [item.sku for item in items], "counts": [item.count for item in items]}


def seed_stock(shards: Shards, levels: Sequence[StockLevel]) -> int:
    """Insert the seed rows that are missing in shard 0; a restart never resets stock."""
    with shards.stock.transaction() as conn:
        return PgStockRepository(lambda: conn).insert_missing(levels)


# --- possibly stale reads -----------------------------------------------------------------------------


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
