"""Orders in PostgreSQL (sql/orders): a batch stored in one transaction, an order read back in its shape.

The only module of the order viewer that speaks SQL. The tables' columns are the order's JSON keys (the
domain's field names), so the statements are derived from the domain's Order, and a row is a part of the
order's to_json. A batch is one statement whatever its size (and one more to read the fingerprints stored
under the uids it did not insert): the orders' canonical JSON travels as one JSON array that PostgreSQL splits
into the four tables, so a poll of a thousand orders costs the same round trips as one, and nothing is
encoded again for the database.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pg8000.exceptions import DatabaseError

from functions.orders.domain import (
    Delivery,
    EncodedOrder,
    Item,
    Order,
    OrderRejectedError,
    OrderSummary,
    Payment,
    StoreResult,
)
from shared_lib import postgres
from shared_lib.postgres import ConnectionPool


@dataclass(frozen=True)
class _Table:
    """A table of one part of the order: its columns are the keys of that part's JSON (the domain's field
    names), after the keys that place a row (`order_uid`, an item's `position`)."""

    name: str
    keys: tuple[tuple[str, str], ...]  # (column, SQL type) before the part's own fields
    part: type[Any]
    skip: tuple[str, ...] = ()  # fields stored elsewhere (the order's nested parts)
    extra: tuple[tuple[str, str], ...] = ()  # columns after them (the order's fingerprint)

    @functools.cached_property
    def fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.part) if f.name not in self.skip]

    @functools.cached_property
    def typed(self) -> list[tuple[str, str]]:
        """(name, SQL type) of the part's own fields, in order."""
        hints = typing.get_type_hints(self.part)
        return [(name, _SQL_TYPES[hints[name]]) for name in self.fields]

    def insert(self, keys: str, source: str, document: str, extra: str = "", conflict: str = "") -> str:
        """INSERT of the rows `source` yields: `keys` (the SQL of the key columns' values), then the fields of
        the part's JSON object `document`, then `extra`."""
        names = ", ".join(name for name, _ in [*self.keys, *self.typed, *self.extra])
        record = ", ".join(f"{name} {kind}" for name, kind in self.typed)
        values = ", ".join([keys, *(f"r.{name}" for name in self.fields), *([extra] if extra else [])])
        return (
            f"INSERT INTO {self.name} ({names}) SELECT {values}"
            f" FROM {source}, jsonb_to_record({document}) AS r({record}) {conflict}"
        )

    def select(self, alias: str) -> str:
        return ", ".join(f"{alias}.{name}" for name in self.fields)


_SQL_TYPES = {str: "text", int: "bigint", datetime: "timestamptz"}
_UID = (("order_uid", "text"),)
_ORDERS = _Table(
    "orders",
    _UID,
    Order,
    skip=("order_uid", "delivery", "payment", "items"),
    extra=(("fingerprint", "text"),),
)
_DELIVERIES = _Table("deliveries", _UID, Delivery)
_PAYMENTS = _Table("payments", _UID, Payment)
_ITEMS = _Table("order_items", (*_UID, ("position", "integer")), Item)

# A batch in one statement: the orders' canonical JSON documents (as received, validated, encoded once) travel
# as one JSON array beside their fingerprints (one text, hex digests separated by commas: a text[] parameter
# costs pg8000 an escape per character), and PostgreSQL splits them into the four tables. The parts of the
# orders that ON CONFLICT skipped (a stored uid) are not inserted; the statement returns the new uids as one
# text separated by spaces (an order_uid has none: domain.ORDER_UID), not a row each.
_INSERT_BATCH = (
    "WITH batch AS (SELECT b.document, b.fingerprint, b.document->>'order_uid' AS order_uid"
    " FROM ROWS FROM (jsonb_array_elements(CAST(:documents AS jsonb)),"
    " unnest(string_to_array(:fingerprints, ','))) AS b(document, fingerprint)),"
    " new AS ("
    + _ORDERS.insert(
        "b.order_uid",
        "batch b",
        "b.document",
        "b.fingerprint",
        "ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid",
    )
    + "), fresh AS (SELECT b.* FROM batch b JOIN new USING (order_uid)),"
    " deliveries AS (" + _DELIVERIES.insert("b.order_uid", "fresh b", "b.document->'delivery'") + "),"
    " payments AS (" + _PAYMENTS.insert("b.order_uid", "fresh b", "b.document->'payment'") + "),"
    " items AS ("
    + _ITEMS.insert(
        "b.order_uid, CAST(i.n - 1 AS integer)",
        "fresh b, jsonb_array_elements(b.document->'items') WITH ORDINALITY AS i(item, n)",
        "i.item",
    )
    + ") SELECT string_agg(order_uid, ' ') FROM new"
)
_HEAD_FIELDS = ["order_uid", *_ORDERS.fields]
_SELECT_ORDER = (
    f"SELECT o.order_uid, {_ORDERS.select('o')}, {_DELIVERIES.select('d')}, {_PAYMENTS.select('p')}"
    " FROM orders o JOIN deliveries d USING (order_uid) JOIN payments p USING (order_uid)"
    " WHERE o.order_uid = :u"
)
_SELECT_ITEMS = f"SELECT {_ITEMS.select('i')} FROM order_items i WHERE i.order_uid = :u ORDER BY i.position"


class PgOrderRepository:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def store(self, orders: Sequence[EncodedOrder]) -> StoreResult:
        if not orders:
            return StoreResult(frozenset())
        documents = b"[" + b",".join(o.data for o in orders) + b"]"
        try:
            with self.pool.connection() as conn:  # one statement: atomic without BEGIN and COMMIT
                rows = conn.run(
                    _INSERT_BATCH,
                    documents=documents.decode(),
                    fingerprints=",".join(o.fingerprint for o in orders),
                )
                inserted = frozenset((rows[0][0] or "").split(" ")) - {""}
                fingerprints = {o.order_uid: o.fingerprint for o in orders if o.order_uid in inserted}
                others = [o.order_uid for o in orders if o.order_uid not in inserted]
                if others:
                    found = conn.run(
                        "SELECT order_uid, fingerprint FROM orders WHERE order_uid = ANY(CAST(:u AS text[]))",
                        u=others,
                    )
                    fingerprints.update({uid: fp for uid, fp in found or []})
        except DatabaseError as exc:
            if postgres.is_transient(exc):
                raise  # the pool made it a TransientError already; a plain DatabaseError here is not one
            code = postgres.sqlstate(exc)
            raise OrderRejectedError(f"invalid: the database refused the order (SQLSTATE {code})") from exc
        return StoreResult(inserted, fingerprints)

    def get(self, order_uid: str) -> Order | None:
        with self.pool.connection() as conn:
            heads = conn.run(_SELECT_ORDER, u=order_uid)
            if not heads:
                return None
            items = conn.run(_SELECT_ITEMS, u=order_uid) or []
        row = heads[0]
        head, delivery = len(_HEAD_FIELDS), len(_HEAD_FIELDS) + len(_DELIVERIES.fields)
        document: dict[str, Any] = dict(zip(_HEAD_FIELDS, row[:head], strict=True))
        document["delivery"] = dict(zip(_DELIVERIES.fields, row[head:delivery], strict=True))
        document["payment"] = dict(zip(_PAYMENTS.fields, row[delivery:], strict=True))
        document["items"] = [dict(zip(_ITEMS.fields, item, strict=True)) for item in items]
        return Order.from_json(document)

    def recent(self, limit: int) -> list[OrderSummary]:
        rows = self.pool.run(
            "SELECT o.order_uid, o.date_created, p.amount, p.currency,"
            " (SELECT count(*) FROM order_items i WHERE i.order_uid = o.order_uid)"
            " FROM orders o JOIN payments p USING (order_uid)"
            " ORDER BY o.ingested_at DESC, o.order_uid LIMIT :n",
            n=limit,
        )
        return [
            OrderSummary(uid, created, int(amount), currency, int(count))
            for uid, created, amount, currency, count in rows
        ]

    def count(self, order_uids: Sequence[str]) -> int:
        rows = self.pool.run(
            "SELECT count(*) FROM orders WHERE order_uid = ANY(CAST(:u AS text[]))", u=list(order_uids)
        )
        return int(rows[0][0])
