"""Orders in PostgreSQL (sql/orders): a batch stored in one transaction, an order read back in its shape.

The only module of the order viewer that speaks SQL. A batch is a handful of statements whatever its size:
each table's rows travel as one JSON document expanded by jsonb_to_recordset, so a poll of a thousand
orders costs the same few round trips as one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    rfc3339,
)
from shared_lib import postgres
from shared_lib.postgres import ConnectionPool

_ORDER_COLUMNS = (
    "order_uid text, track_number text, entry text, locale text, internal_signature text, customer_id text,"
    " delivery_service text, shardkey text, sm_id bigint, date_created timestamptz, oof_shard text,"
    " fingerprint text"
)
_DELIVERY_COLUMNS = (
    "order_uid text, name text, phone text, zip text, city text, address text, region text, email text"
)
_PAYMENT_COLUMNS = (
    "order_uid text, transaction text, request_id text, currency text, provider text, amount bigint,"
    " payment_dt bigint, bank text, delivery_cost bigint, goods_total bigint, custom_fee bigint"
)
_ITEM_COLUMNS = (
    "order_uid text, position integer, chrt_id bigint, track_number text, price bigint, rid text, name text,"
    " sale integer, size text, total_price bigint, nm_id bigint, brand text, status bigint"
)


def _names(columns: str) -> str:
    return ", ".join(c.split()[0] for c in columns.split(","))


def _insert(table: str, columns: str, conflict: str = "") -> str:
    names = _names(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names}"
        f" FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({columns}) {conflict}"
    )


_INSERT_ORDERS = _insert("orders", _ORDER_COLUMNS, "ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid")
_INSERT_DELIVERIES = _insert("deliveries", _DELIVERY_COLUMNS)
_INSERT_PAYMENTS = _insert("payments", _PAYMENT_COLUMNS)
_INSERT_ITEMS = _insert("order_items", _ITEM_COLUMNS)


def _rows(orders: Sequence[Order]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    heads, deliveries, payments, items = [], [], [], []
    for o in orders:
        uid, d, p = o.order_uid, o.delivery, o.payment
        heads.append(
            [
                uid,
                o.track_number,
                o.entry,
                o.locale,
                o.internal_signature,
                o.customer_id,
                o.delivery_service,
                o.shardkey,
                o.sm_id,
                rfc3339(o.date_created),
                o.oof_shard,
                o.fingerprint,
            ]
        )
        deliveries.append([uid, d.name, d.phone, d.zip, d.city, d.address, d.region, d.email])
        payments.append(
            [
                uid,
                p.transaction,
                p.request_id,
                p.currency,
                p.provider,
                p.amount,
                p.payment_dt,
                p.bank,
                p.delivery_cost,
                p.goods_total,
                p.custom_fee,
            ]
        )
        for position, i in enumerate(o.items):
            items.append(
                [
                    uid,
                    position,
                    i.chrt_id,
                    i.track_number,
                    i.price,
                    i.rid,
                    i.name,
                    i.sale,
                    i.size,
                    i.total_price,
                    i.nm_id,
                    i.brand,
                    i.status,
                ]
            )
    return heads, deliveries, payments, items


def _document(columns: str, rows: list[list[Any]]) -> str:
    names = [c.split()[0] for c in columns.split(",")]
    return json.dumps([dict(zip(names, row, strict=True)) for row in rows], ensure_ascii=False)


class PgOrderRepository:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def store(self, orders: Sequence[Order]) -> StoreResult:
        if not orders:
            return StoreResult(frozenset())
        heads, deliveries, payments, items = _rows(orders)
        try:
            with self.pool.transaction() as conn:
                inserted = frozenset(
                    r[0] for r in conn.run(_INSERT_ORDERS, rows=_document(_ORDER_COLUMNS, heads)) or []
                )
                if inserted:

                    def new(rows: list[list[Any]]) -> list[list[Any]]:
                        return [row for row in rows if row[0] in inserted]

                    conn.run(_INSERT_DELIVERIES, rows=_document(_DELIVERY_COLUMNS, new(deliveries)))
                    conn.run(_INSERT_PAYMENTS, rows=_document(_PAYMENT_COLUMNS, new(payments)))
                    conn.run(_INSERT_ITEMS, rows=_document(_ITEM_COLUMNS, new(items)))
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
            heads = conn.run(
                "SELECT o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature, o.customer_id,"
                " o.delivery_service, o.shardkey, o.sm_id, o.date_created, o.oof_shard,"
                " d.name, d.phone, d.zip, d.city, d.address, d.region, d.email,"
                " p.transaction, p.request_id, p.currency, p.provider, p.amount, p.payment_dt, p.bank,"
                " p.delivery_cost, p.goods_total, p.custom_fee"
                " FROM orders o JOIN deliveries d USING (order_uid) JOIN payments p USING (order_uid)"
                " WHERE o.order_uid = :u",
                u=order_uid,
            )
            if not heads:
                return None
            items = conn.run(
                f"SELECT {_names(_ITEM_COLUMNS)} FROM order_items WHERE order_uid = :u ORDER BY position",
                u=order_uid,
            )
        h = heads[0]
        return Order(
            order_uid=h[0],
            track_number=h[1],
            entry=h[2],
            locale=h[3],
            internal_signature=h[4],
            customer_id=h[5],
            delivery_service=h[6],
            shardkey=h[7],
            sm_id=int(h[8]),
            date_created=h[9],
            oof_shard=h[10],
            delivery=Delivery(*h[11:18]),
            payment=Payment(h[18], h[19], h[20], h[21], int(h[22]), int(h[23]), h[24], *map(int, h[25:28])),
            items=tuple(
                Item(
                    chrt_id=int(r[2]),
                    track_number=r[3],
                    price=int(r[4]),
                    rid=r[5],
                    name=r[6],
                    sale=int(r[7]),
                    size=r[8],
                    total_price=int(r[9]),
                    nm_id=int(r[10]),
                    brand=r[11],
                    status=int(r[12]),
                )
                for r in items or []
            ),
        )

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
