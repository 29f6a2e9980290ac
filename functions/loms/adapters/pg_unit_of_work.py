"""loms' writes on PostgreSQL: the unit of work (one transaction on the order's shard, plus shard 0's for the
stock) with its order and stock repositories, and the one query that loads an order. No reads from replicas,
no relay, no sweep coordination: those are pg_readers', pg_outbox's and pg_sweep's.

Transactions. A unit of work is one transaction on the order's shard. The stock lives in shard 0:
- order in shard 0: the stock work runs on the same connection, so create, pay and cancel are each one
  transaction and fully atomic. A create there (place_order) is one statement, so one round trip: without
  BEGIN and COMMIT, which would be two more, and without a round trip per step;
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
from functions.loms.service import place_in
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
        self._place = _place_statement(shards.count)

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

    def place_order(
        self, user_id: int, items: tuple[Item, ...]
    ) -> tuple[Order, InsufficientStockError | None]:
        index = user_id % self.shards.count
        if index != 0:  # the order apart from the stock: two transactions, step by step (see the module doc)
            with self._unit(index) as unit:
                return place_in(unit, user_id, items)
        # The order with the stock: the whole create is one statement, so one transaction without BEGIN and
        # COMMIT, and one round trip.
        with self.shards.stock.connection() as conn:
            rows = conn.run(self._place, u=user_id, t=current_traceparent(), **_arrays(items))
        order_id, short = int(rows[0][0]), _shortfall(rows[0][1:])
        if short is not None:
            return Order(order_id, user_id, OrderStatus.FAILED, items), short.of_order(order_id)
        return Order(order_id, user_id, OrderStatus.AWAITING_PAYMENT, items), None

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
        # RETURNING: a statement that returns rows is prepared once per connection (shared_lib.postgres)
        rows = self.conn.run(
            "WITH changed AS (UPDATE orders SET status = :s, updated_at = now() WHERE order_id = :o"
            " RETURNING order_id, user_id, status) " + _OUTBOX_INSERT + " FROM changed RETURNING event_id",
            s=status.value,
            o=order.order_id,
            n=self.shard_count,
            i=self.shard_index,
            t=current_traceparent(),
        )
        if len(rows) != 1:  # the unit holds the order's row lock: it cannot have gone
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
        # One round trip: lock, check, reserve (see _RESERVE). Nothing written when it refuses, so the unit
        # goes on; a failure after a write fails (rolls back) the whole unit.
        rows = self._conn().run(
            "WITH " + _RESERVE + ","
            " held AS (INSERT INTO reservations (order_id, sku, count) SELECT :o, sku, count FROM taken)"
            " SELECT short.sku, short.count, short.total_count, short.reserved, (SELECT count(*) FROM taken)"
            " FROM (SELECT) AS one LEFT JOIN short ON true",
            o=order_id,
            **_arrays(items),
        )
        short = _shortfall(rows[0][:4])
        if short is not None:
            raise short
        if int(rows[0][4]) != len(items):  # cannot happen under the row locks; never half-reserve if it does
            raise RuntimeError(f"reserved {rows[0][4]} of {len(items)} stock rows of order {order_id}")

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
        conn.run(  # RETURNING: prepared once per connection, then one round trip (shared_lib.postgres)
            f"UPDATE stocks SET {assignments}"
            " FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[])) AS t(sku, count)"
            " WHERE stocks.sku = t.sku RETURNING stocks.sku",
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


# Reserving all of the items (:skus, :counts; one per SKU) or none, as CTEs of one statement:
# - `locked` locks the stock rows of the SKUs in ascending SKU order (the lock order of every unit) and reads
#   them as they are once locked (under READ COMMITTED, a row lock that waited returns the latest version);
# - `short` is the first SKU without a row or without enough available, from those locked rows;
# - `taken` reserves every SKU only when none is short. It depends on `short`, so PostgreSQL has taken every
#   lock before it writes, and it writes the rows this statement locked and checked, which nothing else can
#   change meanwhile (an UPDATE re-reads a row changed since the statement's snapshot: EvalPlanQual).
# So a refusal writes nothing, and a success reserves every SKU.
_RESERVE = (
    "wanted AS (SELECT * FROM unnest(CAST(:skus AS bigint[]), CAST(:counts AS bigint[])) AS t(sku, count)),"
    " locked AS MATERIALIZED (SELECT sku, total_count, reserved FROM stocks"
    " WHERE sku = ANY(CAST(:skus AS bigint[])) ORDER BY sku FOR UPDATE),"
    " short AS MATERIALIZED (SELECT wanted.sku, wanted.count, locked.total_count, locked.reserved"
    " FROM wanted LEFT JOIN locked ON locked.sku = wanted.sku"
    " WHERE locked.sku IS NULL OR locked.total_count - locked.reserved < wanted.count"
    " ORDER BY wanted.sku LIMIT 1),"
    " taken AS (UPDATE stocks SET reserved = stocks.reserved + wanted.count FROM wanted"
    " WHERE stocks.sku = wanted.sku AND NOT EXISTS (SELECT FROM short) RETURNING stocks.sku, wanted.count)"
)


# The whole create of an order in the stock's shard, one statement: reserve (as above) and store the order in
# its final status (`failed` when a SKU is short, else `awaiting payment`) with its items, its reservations,
# and its two events, `new` and then the final status. The second event is made from the first's row, so its
# id comes from the sequence after the first's and its moment is strictly later, as two statements give.
# One statement is one transaction: all of it commits, or none. The constants are in its text (the shard
# count, shard 0's index, the statuses) and not parameters: fewer values to convert and send per order.
def _place_statement(shard_count: int) -> str:
    new, awaiting, failed = (
        f"'{s.value}'" for s in (OrderStatus.NEW, OrderStatus.AWAITING_PAYMENT, OrderStatus.FAILED)
    )
    event_id = f"nextval('outbox_seq') * {int(shard_count)}"  # + 0: shard 0
    return (
        "WITH " + _RESERVE + ","
        " added AS (INSERT INTO orders (order_id, user_id, status)"
        f" SELECT nextval('order_seq') * {int(shard_count)}, :u,"
        f" CASE WHEN EXISTS (SELECT FROM short) THEN {failed} ELSE {awaiting} END"
        " RETURNING order_id, user_id, status),"
        " lines AS (INSERT INTO order_items (order_id, sku, count)"
        " SELECT added.order_id, wanted.sku, wanted.count FROM added, wanted),"
        " held AS (INSERT INTO reservations (order_id, sku, count)"
        " SELECT added.order_id, taken.sku, taken.count FROM added, taken),"
        " created AS (INSERT INTO outbox (event_id, order_id, user_id, status, moment, traceparent)"
        f" SELECT {event_id}, order_id, user_id, {new}, clock_timestamp(), CAST(:t AS text)"
        " FROM added RETURNING order_id, user_id, moment),"
        " moved AS (INSERT INTO outbox (event_id, order_id, user_id, status, moment, traceparent)"
        f" SELECT {event_id}, created.order_id, created.user_id, added.status,"
        " greatest(clock_timestamp(), created.moment + interval '1 microsecond'), CAST(:t AS text)"
        " FROM created, added)"
        " SELECT added.order_id, short.sku, short.count, short.total_count, short.reserved"
        " FROM added LEFT JOIN short ON true"
    )


def _shortfall(row: Sequence[Any]) -> InsufficientStockError | None:
    """The refusal that `short`'s row (sku, wanted, total, reserved; all NULL: none short) stands for."""
    sku, wanted, total, reserved = row
    if sku is None:
        return None
    level = None if total is None else StockLevel(int(sku), int(total), int(reserved)).available
    return InsufficientStockError(int(sku), int(wanted), level)


def _arrays(items: Sequence[Item]) -> dict[str, Any]:
    return {"skus": [item.sku for item in items], "counts": [item.count for item in items]}


def seed_stock(shards: Shards, levels: Sequence[StockLevel]) -> int:
    """Insert the seed rows that are missing in shard 0; a restart never resets stock."""
    with shards.stock.transaction() as conn:
        return PgStockRepository(lambda: conn).insert_missing(levels)
