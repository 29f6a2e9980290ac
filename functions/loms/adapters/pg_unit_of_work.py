"""loms' writes on PostgreSQL: the unit of work (one transaction on the order's shard, plus shard 0's for the
stock) with its order and stock repositories, and the one query that loads an order. No reads from replicas,
no relay, no sweep coordination: those are pg_readers', pg_outbox's and pg_sweep's.

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

Outbox. Every status change (and the `new` of a created order) writes its event row in the order's shard, in
the same statement as the change, so the event exists if and only if the change committed. Event ids are
`nextval('outbox_seq') * n + i`, unique across shards (see pg_outbox for how the relay reads them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from functions.loms.adapters.pg_shards import Shards
from functions.loms.domain import InsufficientStockError, Item, Order, OrderStatus, StockLevel
from shared_lib.observability.tracing import current_traceparent
from shared_lib.postgres import Connection

# --- units of work ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgOrderUnit:
    orders: PgOrderRepository
    stock: PgStockRepository


class PgUnitOfWork:
    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    @property
    def shard_count(self) -> int:
        return self.shards.count

    def for_new_order(self, user_id: int) -> contextlib.AbstractContextManager[PgOrderUnit]:
        return self._unit(user_id % self.shards.count)

    def for_order(self, order_id: int) -> contextlib.AbstractContextManager[PgOrderUnit]:
        return self._unit(self.shards.index_of(order_id))

    def for_shard(self, index: int) -> contextlib.AbstractContextManager[PgOrderUnit]:
        if not 0 <= index < self.shards.count:
            raise ValueError(f"no shard {index} of {self.shards.count}")
        return self._unit(index)

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
        # One round trip: the order (its id from the shard's sequence), its `new` event and its items.
        rows = self.conn.run(
            "WITH added AS (INSERT INTO orders (order_id, user_id, status)"
            " VALUES (nextval('order_seq') * :n + :i, :u, :s) RETURNING order_id, user_id, status),"
            " event AS (" + _OUTBOX_INSERT + " FROM added),"
            " lines AS (INSERT INTO order_items (order_id, sku, count)"
            " SELECT added.order_id, t.sku, t.count FROM added,"
            " unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[])) AS t(sku, count))"
            " SELECT order_id FROM added",
            u=user_id,
            s=OrderStatus.NEW.value,
            n=self.shard_count,
            i=self.shard_index,
            t=current_traceparent(),
            **_arrays(items),
        )
        return Order(int(rows[0][0]), user_id, OrderStatus.NEW, items)

    def get_for_update(self, order_id: int) -> Order | None:
        return load_order(self.conn, order_id, lock=True)

    def change_status(self, order: Order, status: OrderStatus) -> Order:
        changed = order.moved_to(status)
        self.conn.run(
            "WITH changed AS (UPDATE orders SET status = :s, updated_at = now() WHERE order_id = :o"
            " RETURNING order_id, user_id, status) " + _OUTBOX_INSERT + " FROM changed",
            s=status.value,
            o=order.order_id,
            n=self.shard_count,
            i=self.shard_index,
            t=current_traceparent(),
        )
        if self.conn.row_count != 1:  # the unit holds the order's row lock: it cannot have gone
            raise RuntimeError(f"order {order.order_id} vanished while its status changed")
        return changed

    def next_stale(self, older_than: timedelta) -> Order | None:
        # The status literals match the partial index orders_open_by_age. SKIP LOCKED: an order that a pay, a
        # cancel or another sweeper holds is not waited for; the next sweep sees it again if still open.
        rows = self.conn.run(
            "SELECT order_id FROM orders WHERE status IN ('new', 'awaiting payment')"
            " AND updated_at < now() - make_interval(secs => :w)"
            " ORDER BY updated_at, order_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            w=older_than.total_seconds(),
        )
        return load_order(self.conn, int(rows[0][0]), lock=True) if rows else None


# The event row of a change, in the same statement as the change; `moment` is the wall clock of the statement
# (clock_timestamp, not now()), so the `new` and the next status of one create get distinct, ordered moments.
# `traceparent` is the trace context of the request that made the change (NULL when not traced): the relay
# sends it as the Kafka record's header, and the consumer links its span to it.
_OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, order_id, user_id, status, moment, traceparent)"
    " SELECT nextval('outbox_seq') * :n + :i, order_id, user_id, status, clock_timestamp(), CAST(:t AS text)"
)


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
        # All-or-nothing without a savepoint: every row is locked and checked before anything is written, so
        # a refusal leaves nothing to undo; a failure after the first write fails (rolls back) the whole unit.
        levels = _lock(conn, [item.sku for item in items])
        for item in items:
            level = levels.get(item.sku)
            if level is None or level.total_count - level.reserved < item.count:
                raise InsufficientStockError(item.sku, item.count, None if level is None else level.available)
        rows = conn.run(
            "WITH wanted AS (SELECT * FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[]))"
            " AS t(sku, count)),"
            " taken AS (UPDATE stocks SET reserved = stocks.reserved + wanted.count FROM wanted"
            " WHERE stocks.sku = wanted.sku AND stocks.total_count - stocks.reserved >= wanted.count"
            " RETURNING stocks.sku, wanted.count),"
            " held AS (INSERT INTO reservations (order_id, sku, count) SELECT :o, sku, count FROM taken)"
            " SELECT count(*) FROM taken",
            o=order_id,
            **_arrays(items),
        )
        if int(rows[0][0]) != len(items):  # cannot happen under the row locks; never half-reserve if it does
            raise RuntimeError(f"reserved {rows[0][0]} of {len(items)} stock rows of order {order_id}")

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
