"""HTTP shapes of the cart functions: parse and validate the request, call the service, shape the response."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.cart.domain import UINT32_MAX, CartView
from functions.cart.service import CartService
from shared_lib import web


class AddItemBody(BaseModel):
    # strict: "2", true and 1.5 are not counts; an unknown field is refused, as loms does
    model_config = ConfigDict(strict=True, extra="forbid")

    count: int = Field(ge=1, le=UINT32_MAX)


def _cart(view: CartView) -> dict[str, object]:
    return {
        "items": [
            {"sku": line.sku, "name": line.name, "count": line.count, "price": line.price}
            for line in view.lines
        ],
        "total_price": view.total_price,
    }


def add_item(service: CartService, call: web.Call) -> web.Reply:
    body = call.json(AddItemBody)
    service.add_item(call.id("user_id"), call.id("sku"), body.count)
    return web.ok({})


def delete_item(service: CartService, call: web.Call) -> web.Reply:
    service.delete_item(call.id("user_id"), call.id("sku"))
    return web.no_content()


def clear_cart(service: CartService, call: web.Call) -> web.Reply:
    service.clear_cart(call.id("user_id"))
    return web.no_content()


def list_cart(service: CartService, call: web.Call) -> web.Reply:
    return web.ok(_cart(service.list_cart(call.id("user_id"))))


def checkout(service: CartService, call: web.Call) -> web.Reply:
    return web.ok({"order_id": service.checkout(call.id("user_id"), call.headers.get("Idempotency-Key"))})
