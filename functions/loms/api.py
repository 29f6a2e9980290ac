"""HTTP shapes of the loms functions: parse and validate, call the service, shape the response.

As protojson does: int64 fields are read from JSON numbers or decimal strings and written as strings;
counts are JSON numbers. A boolean or a float is never an integer here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from functions.loms.domain import UINT32_MAX, Item, Order
from functions.loms.service import LomsService, OutboxRelay, StaleOrderSweeper
from shared_lib import web
from shared_lib.ints import INT64_MAX, NotAnInteger, OutOfRange, parse_int


def _whole(value: Any, high: int, strings: bool) -> int:
    try:
        return parse_int(value, 1, high, strings=strings)
    except NotAnInteger:
        kind = "a JSON number or a string of decimal digits" if strings else "a JSON number"
        raise ValueError(f"must be an integer from 1 to {high} ({kind})") from None
    except OutOfRange:
        raise ValueError(f"must be an integer from 1 to {high}") from None


def _int64(value: Any) -> int:
    return _whole(value, INT64_MAX, strings=True)


def _count(value: Any) -> int:
    return _whole(value, UINT32_MAX, strings=False)


Int64 = Annotated[int, BeforeValidator(_int64)]
Count = Annotated[int, BeforeValidator(_count)]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Int64
    count: Count


class CreateOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Int64 = Field(alias="userId")
    items: list[ItemIn] = Field(min_length=1)


class OrderIdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: Int64 = Field(alias="orderId")


class OrderQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown query parameter is a 400, not silently dropped

    order_id: Int64 = Field(alias="orderId")


class StockQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown query parameter is a 400, not silently dropped

    sku: Int64


def _order(order: Order) -> dict[str, object]:
    return {
        "status": order.status.value,
        "userId": str(order.user_id),
        "items": [
            {"sku": str(item.sku), "count": item.count} for item in sorted(order.items, key=lambda i: i.sku)
        ],
    }


def create_order(service: LomsService, call: web.Call) -> web.Reply:
    body = call.json(CreateOrderIn)
    order_id = service.create_order(body.user_id, [Item(item.sku, item.count) for item in body.items])
    return web.ok({"orderId": str(order_id)})


def order_info(service: LomsService, call: web.Call) -> web.Reply:
    query = call.query_model(OrderQuery)
    return web.ok(_order(service.order_info(query.order_id)))


def pay_order(service: LomsService, call: web.Call) -> web.Reply:
    service.pay_order(call.json(OrderIdIn).order_id)
    return web.ok({})


def cancel_order(service: LomsService, call: web.Call) -> web.Reply:
    service.cancel_order(call.json(OrderIdIn).order_id)
    return web.ok({})


def stock_info(service: LomsService, call: web.Call) -> web.Reply:
    query = call.query_model(StockQuery)
    return web.ok({"count": service.stock_info(query.sku)})


# --- cluster-internal cron functions (a PingSource POSTs here; its body carries nothing we need) ----------


def relay_outbox(relay: OutboxRelay, call: web.Call) -> web.Reply:
    """Drain the outbox, then keep relaying for the configured linger; 503 when the run ended on a transport
    or database failure (500 on a bug)."""
    try:
        report = relay.linger()
    finally:
        relay.close()
    if report.failure is not None:
        raise report.failure
    return web.ok({"published": report.published})


def cancel_stale_orders(sweeper: StaleOrderSweeper, call: web.Call) -> web.Reply:
    report = sweeper.run()
    return web.ok(
        {
            "cancelled": report.cancelled,
            "orphans_released": report.orphans_released,
            "busy_shards": report.busy_shards,
            "events_pruned": report.events_pruned,
        }
    )
