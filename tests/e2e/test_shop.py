"""The dev server as a user sees it: cart, product and loms as processes calling each other over HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.e2e.http import call, notifications
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

KNOWN = {1076963: ("Теория нравственных чувств | Смит Адам", 3379), 1148162: ("Кулинар Гуров", 2931)}


def available(shop: dict[str, str], sku: int) -> int:
    status, body, _ = call("GET", f"{shop['loms']}/stock/info?sku={sku}")
    assert status == 200
    return int(body["count"])


@pytest.mark.function("checkout")
def test_a_user_fills_a_cart_checks_out_and_pays(shop: dict[str, str], unique_id: Callable[[], int]) -> None:
    user = unique_id()
    before = {sku: available(shop, sku) for sku in KNOWN}
    assert call("POST", f"{shop['cart']}/user/{user}/cart/1076963", {"count": 2})[:2] == (200, {})
    assert call("POST", f"{shop['cart']}/user/{user}/cart/1148162", {"count": 1})[0] == 200
    assert call("POST", f"{shop['cart']}/user/{user}/cart/1076963", {"count": 1})[0] == 200

    status, cart, headers = call("GET", f"{shop['cart']}/user/{user}/cart")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert cart == {
        "items": [
            {"sku": 1076963, "name": KNOWN[1076963][0], "count": 3, "price": 3379},
            {"sku": 1148162, "name": KNOWN[1148162][0], "count": 1, "price": 2931},
        ],
        "total_price": 3 * 3379 + 2931,
    }

    status, order, _ = call("POST", f"{shop['cart']}/checkout/{user}")
    assert status == 200
    order_id = order["order_id"]
    assert isinstance(order_id, int)
    assert call("GET", f"{shop['cart']}/user/{user}/cart")[0] == 404  # cleared once the order exists

    status, info, _ = call("GET", f"{shop['loms']}/order/info?orderId={order_id}")
    assert (status, info["status"], info["userId"]) == (200, "awaiting payment", str(user))
    assert info["items"] == [{"sku": "1076963", "count": 3}, {"sku": "1148162", "count": 1}]
    assert available(shop, 1076963) == before[1076963] - 3

    assert call("POST", f"{shop['loms']}/order/pay", {"orderId": str(order_id)})[:2] == (200, {})
    assert call("POST", f"{shop['loms']}/order/pay", {"orderId": order_id})[0] == 200  # paying twice is fine
    assert call("GET", f"{shop['loms']}/order/info?orderId={order_id}")[1]["status"] == "paid"
    assert available(shop, 1076963) == before[1076963] - 3
    assert call("POST", f"{shop['loms']}/order/cancel", {"orderId": order_id})[1]["code"] == 9


@pytest.mark.function("checkout")
def test_checkout_that_loms_cannot_reserve_leaves_the_cart(
    shop: dict[str, str], unique_id: Callable[[], int]
) -> None:
    user, sku = unique_id(), 1076963
    # Another buyer takes all but one unit, after our add passed its stock check.
    assert call("POST", f"{shop['cart']}/user/{user}/cart/{sku}", {"count": 2})[0] == 200
    rest = available(shop, sku) - 1
    status, order, _ = call(
        "POST",
        f"{shop['loms']}/order/create",
        {"userId": unique_id(), "items": [{"sku": sku, "count": rest}]},
    )
    assert status == 200
    try:
        status, body, _ = call("POST", f"{shop['cart']}/checkout/{user}")
        assert (status, body["code"]) == (412, 9)
        assert call("GET", f"{shop['cart']}/user/{user}/cart")[1]["items"][0]["count"] == 2
    finally:
        call("POST", f"{shop['loms']}/order/cancel", {"orderId": order["orderId"]})


@pytest.mark.function("add_item")
def test_adding_more_than_the_stock_is_refused(shop: dict[str, str], unique_id: Callable[[], int]) -> None:
    user, sku = unique_id(), 1148162
    status, body, _ = call(
        "POST", f"{shop['cart']}/user/{user}/cart/{sku}", {"count": available(shop, sku) + 1}
    )
    assert (status, body["code"]) == (412, 9)
    assert call("GET", f"{shop['cart']}/user/{user}/cart")[0] == 404
    # a SKU the catalogue does not have
    status, body, _ = call("POST", f"{shop['cart']}/user/{user}/cart/7", {"count": 1})
    assert (status, body["code"]) == (412, 9)


@pytest.mark.function("checkout")
def test_idempotent_checkout_creates_one_order(shop: dict[str, str], unique_id: Callable[[], int]) -> None:
    user = unique_id()
    call("POST", f"{shop['cart']}/user/{user}/cart/1076963", {"count": 1})
    key = {"Idempotency-Key": f"e2e-{user}"}
    first = call("POST", f"{shop['cart']}/checkout/{user}", headers=key)
    again = call("POST", f"{shop['cart']}/checkout/{user}", headers=key)
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    call("POST", f"{shop['loms']}/order/cancel", {"orderId": first[1]["order_id"]})


@pytest.mark.parametrize(
    ("method", "service", "path", "body", "status"),
    [
        ("POST", "cart", "/user/0/cart/1076963", {"count": 1}, 400),
        ("POST", "cart", "/user/1/cart/abc", {"count": 1}, 400),
        ("POST", "cart", "/user/1/cart/1076963", {"count": 0}, 400),
        ("POST", "cart", "/user/1/cart/1076963", {"count": 4294967296}, 400),
        ("POST", "cart", "/user/1/cart/1076963", {"count": -1}, 400),
        ("POST", "cart", "/user/1/cart/1076963", None, 400),
        ("GET", "cart", "/user/1/basket", None, 404),
        ("PUT", "cart", "/user/1/cart", None, 405),
        ("POST", "loms", "/order/create", {"userId": "1", "items": []}, 400),
        ("POST", "loms", "/order/create", {"userId": "x", "items": [{"sku": 1, "count": 1}]}, 400),
        ("GET", "loms", "/order/info?orderId=-3", None, 400),
        ("GET", "loms", "/order/info?orderId=9223372036854775807", None, 404),
        ("GET", "loms", "/stock/info?sku=1", None, 404),
        ("GET", "loms", "/order/pay", None, 405),
        ("GET", "product", "/product/0", None, 400),
    ],
)
def test_bad_requests_get_typed_json_errors(
    shop: dict[str, str], method: str, service: str, path: str, body: object, status: int
) -> None:
    got, payload, headers = call(method, shop[service] + path, body, headers={"X-API-KEY": "testToken"})
    assert got == status
    assert set(payload) == {"code", "message", "details"}
    if status == 405:
        assert "Allow" in headers


def test_a_body_over_one_mebibyte_is_413(shop: dict[str, str]) -> None:
    """Refused from its Content-Length, before a byte of it is read. The request goes out without its body
    and the answer is read at once: sending the whole body raced the server's answer and close (a broken
    pipe on the client when the refusal came first)."""
    url = urlsplit(f"{shop['cart']}/user/1/cart/1076963")
    connection = http.client.HTTPConnection(url.netloc, timeout=60)
    try:
        connection.putrequest("POST", url.path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(1024 * 1024 + 1))
        connection.endheaders()
        answer = connection.getresponse()
        assert (answer.status, json.loads(answer.read())["code"]) == (413, 3)
    finally:
        connection.close()


def test_every_service_serves_its_openapi_document(shop: dict[str, str]) -> None:
    for base in shop.values():
        status, spec, _ = call("GET", f"{base}/openapi.json")
        assert status == 200
        assert spec["openapi"].startswith("3.")


@pytest.mark.function("notify_status")
def test_order_events_travel_through_kafka_to_the_notifier(
    shop: dict[str, str], unique_id: Callable[[], int]
) -> None:
    """create → pay: the outbox, the relay, Kafka, the local KafkaSource and notify_status, in order."""
    user = unique_id()
    status, order, _ = call(
        "POST", f"{shop['loms']}/order/create", {"userId": user, "items": [{"sku": 1148162, "count": 1}]}
    )
    assert status == 200
    assert call("POST", f"{shop['loms']}/order/pay", {"orderId": order["orderId"]})[0] == 200
    items = wait_for(lambda: (got := notifications(shop["notifier"], user)) and len(got) >= 3 and got)
    assert [(i["order_id"], i["status"]) for i in items] == [
        (order["orderId"], "new"),
        (order["orderId"], "awaiting payment"),
        (order["orderId"], "paid"),
    ]
    url = f"{shop['notifier']}/notifications?user_id={user}&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
    # with no new notification, reads of that history are served from memcached: the poll above stored it, or,
    # on a busy machine (memcached's 0.2 s timeout passed, the cache skipped), a later read: a hit comes
    hit = wait_for(lambda: (got := call("GET", url))[2]["X-Cache"] == "hit" and got, what="a cached history")
    assert hit[1]["items"] == items
    assert (
        call("POST", f"{shop['loms']}/order/cancel", {"orderId": order["orderId"]})[0] == 400
    )  # paid: code 9
    # a failed order is announced too, and a new notification makes the cached history stale at once
    status, refused, _ = call(
        "POST", f"{shop['loms']}/order/create", {"userId": user, "items": [{"sku": 1148162, "count": 10**6}]}
    )
    assert (status, refused["code"]) == (400, 9)
    later = wait_for(lambda: (got := notifications(shop["notifier"], user)) and len(got) >= 5 and got)
    assert [i["status"] for i in later[3:]] == ["new", "failed"]
