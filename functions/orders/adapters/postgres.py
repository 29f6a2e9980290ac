"""Orders in PostgreSQL (sql/orders): a batch stored in one transaction, an order read back in its shape.

The only module of the order viewer that speaks SQL. The tables' columns are the order's JSON keys (the
domain's field names), so the statements are derived from the domain's Order, and a row is a part of the
order's to_json. A batch is a handful of statements whatever its size: each table's rows travel as one JSON
document expanded by jsonb_to_recordset, so a poll of a thousand orders costs the same few round trips as one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pg8000.exceptions import DatabaseError

from functions.orders.domain import (
    Delivery,
    Item,
    Order,
    OrderRejectedError,
    OrderSummary,
    Payment,
    StoreResult,
)
from functions.orders.domain import fingerprint as domain_fingerprint
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
    def columns(self) -> list[tuple[str, str]]:
        """(name, SQL type) of every column the rows carry, in order."""
        hints = typing.get_type_hints(self.part)
        typed = [(name, _SQL_TYPES[hints[name]]) for name in self.fields]
        return [*self.keys, *typed, *self.extra]

    def insert(self, conflict: str = "") -> str:
        names = ", ".join(name for name, _ in self.columns)
        record = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        return (
            f"INSERT INTO {self.name} ({names}) SELECT {names}"
            f" FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({record}) {conflict}"
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

_INSERT_ORDERS = _ORDERS.insert("ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid")
_INSERT_DELIVERIES = _DELIVERIES.insert()
_INSERT_PAYMENTS = _PAYMENTS.insert()
_INSERT_ITEMS = _ITEMS.insert()
_HEAD_FIELDS = ["order_uid", *_ORDERS.fields]
_SELECT_ORDER = (
    f"SELECT o.order_uid, {_ORDERS.select('o')}, {_DELIVERIES.select('d')}, {_PAYMENTS.select('p')}"
    " FROM orders o JOIN deliveries d USING (order_uid) JOIN payments p USING (order_uid)"
    " WHERE o.order_uid = :u"
)
_SELECT_ITEMS = f"SELECT {_ITEMS.select('i')} FROM order_items i WHERE i.order_uid = :u ORDER BY i.position"


class _Rows:
    """A batch of orders as each table's rows: the order's JSON (to_json) split by table."""

    def __init__(self, orders: Sequence[Order]) -> None:
        self.heads: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.payments: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self.fingerprints: dict[str, str] = {}
        for order in orders:
            document = order.to_json()
            uid = document["order_uid"]
            fingerprint = self.fingerprints[uid] = domain_fingerprint(document)
            head = {name: document[name] for name in _HEAD_FIELDS}
            head["fingerprint"] = fingerprint
            self.heads.append(head)
            self.deliveries.append({"order_uid": uid, **document["delivery"]})
            self.payments.append({"order_uid": uid, **document["payment"]})
            self.items.extend(
                {"order_uid": uid, "position": position, **item}
                for position, item in enumerate(document["items"])
            )


def _json(rows: list[dict[str, Any]], only: frozenset[str] | None = None) -> str:
    if only is not None:
        rows = [row for row in rows if row["order_uid"] in only]
    return json.dumps(rows, ensure_ascii=False)


class PgOrderRepository:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def store(self, orders: Sequence[Order]) -> StoreResult:
        if not orders:
            return StoreResult(frozenset())
        rows = _Rows(orders)
        try:
            with self.pool.transaction() as conn:
                inserted = frozenset(r[0] for r in conn.run(_INSERT_ORDERS, rows=_json(rows.heads)) or [])
                if inserted:
                    conn.run(_INSERT_DELIVERIES, rows=_json(rows.deliveries, inserted))
                    conn.run(_INSERT_PAYMENTS, rows=_json(rows.payments, inserted))
                    conn.run(_INSERT_ITEMS, rows=_json(rows.items, inserted))
                fingerprints = {uid: rows.fingerprints[uid] for uid in inserted}
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
