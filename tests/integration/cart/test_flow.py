"""The cart as bootstrap wires it, through the dev server's dispatcher: real PostgreSQL (carts, the shared
rate limit, Idempotency-Keys), the real product function on a local port and the real loms in a child process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import functions_framework
import pytest
from werkzeug.test import Client

from functions import devserver
from functions.cart import bootstrap
from functions.product import bootstrap as product_bootstrap
from shared_lib.devtools.ports import free_port
from shared_lib.httpclient import HttpClient
from tests.conftest import MakeDatabase
from tests.integration.cart.conftest import BOOK, PEN
from tests.integration.shared_lib.serving import serve_in_thread

pytestmark = pytest.mark.integration

BOOK_NAME = "Теория нравственных чувств | Смит Адам"
USER = 31337


@pytest.fixture(scope="module")
def product_url() -> Iterator[str]:
    product_bootstrap.reset()  # defaults: no server-side limit, no latency
    app = functions_framework.create_app(target="get_product", source="functions/product/main.py")
    with serve_in_thread(app) as url:
        yield url
    product_bootstrap.reset()


@pytest.fixture
def cart_app(monkeypatch: pytest.MonkeyPatch, make_database: MakeDatabase) -> Iterator[Callable[..., Client]]:
    """cart_app(product_url=…, loms_url=…) -> a client of every cart function, configured through CART_*."""

    def build(product_url: str, loms_url: str) -> Client:
        monkeypatch.setenv("CART_DATABASE_URL", make_database("cart"))
        monkeypatch.setenv("CART_PRODUCT_URL", product_url)
        monkeypatch.setenv("CART_LOMS_URL", loms_url)
        monkeypatch.setenv("CART_HTTP_TIMEOUT_SECONDS", "2")
        bootstrap.reset()
        return Client(devserver.service_app("cart"))

    yield build
    bootstrap.reset()


def send(client: Client, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    headers = {"Idempotency-Key": key} if key else {}
    response = client.open(path, method=method, data=data, headers=headers)
    payload = response.get_data()
    return response.status_code, json.loads(payload) if payload else None


def test_a_shopping_session(cart_app: Callable[..., Client], product_url: str, loms_url: str) -> None:
    cart = cart_app(product_url, loms_url)
    loms = HttpClient(loms_url)
    available = loms.get("/stock/info", query={"sku": BOOK}).json()["count"]

    assert send(cart, "GET", f"/user/{USER}/cart")[0] == 404
    assert send(cart, "POST", f"/user/{USER}/cart/{BOOK}", {"count": 2}, key="a1") == (200, {})
    assert send(cart, "POST", f"/user/{USER}/cart/{BOOK}", {"count": 2}, key="a1") == (200, {})  # a repeat
    assert send(cart, "POST", f"/user/{USER}/cart/{PEN}", {"count": 1}) == (200, {})
    status, body = send(cart, "POST", f"/user/{USER}/cart/{BOOK}", {"count": available})
    assert (status, body["code"]) == (412, 9)  # 2 + available > available
    assert send(cart, "POST", f"/user/{USER}/cart/1", {"count": 1})[0] == 412  # no such product

    status, listed = send(cart, "GET", f"/user/{USER}/cart")
    assert status == 200
    assert [(i["sku"], i["count"]) for i in listed["items"]] == [(BOOK, 2), (PEN, 1)]
    assert listed["items"][0]["name"] == BOOK_NAME
    assert listed["items"][0]["price"] == 3379
    assert listed["total_price"] == sum(i["price"] * i["count"] for i in listed["items"])

    status, order = send(cart, "POST", f"/checkout/{USER}", key="c1")
    assert status == 200
    assert isinstance(order["order_id"], int)
    assert send(cart, "POST", f"/checkout/{USER}", key="c1") == (200, order)  # the same order, once
    assert send(cart, "GET", f"/user/{USER}/cart")[0] == 404
    assert loms.get("/stock/info", query={"sku": BOOK}).json()["count"] == available - 2
    info = loms.get("/order/info", query={"orderId": order["order_id"]}).json()
    assert info["items"] == [{"sku": str(BOOK), "count": 2}, {"sku": str(PEN), "count": 1}]


def test_a_checkout_loms_refuses_keeps_the_cart(
    cart_app: Callable[..., Client], product_url: str, loms_url: str
) -> None:
    cart = cart_app(product_url, loms_url)
    loms = HttpClient(loms_url)
    pens = loms.get("/stock/info", query={"sku": PEN}).json()["count"]
    assert pens >= 2
    assert send(cart, "POST", f"/user/{USER + 1}/cart/{PEN}", {"count": pens}) == (200, {})
    # someone else orders a pen meanwhile, so loms can no longer reserve the whole cart
    other = loms.post("/order/create", json_body={"userId": "1", "items": [{"sku": str(PEN), "count": 1}]})
    assert other.status == 200
    status, body = send(cart, "POST", f"/checkout/{USER + 1}")
    assert (status, body["code"]) == (412, 9)
    status, listed = send(cart, "GET", f"/user/{USER + 1}/cart")
    assert [(i["sku"], i["count"]) for i in listed["items"]] == [(PEN, pens)]


def test_outages_are_503_and_change_nothing(
    cart_app: Callable[..., Client], product_url: str, loms_url: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    cart = cart_app(closed, loms_url)  # the product service is down
    status, body = send(cart, "POST", f"/user/{USER}/cart/{BOOK}", {"count": 1})
    assert (status, body["code"]) == (503, 14)
    assert send(cart, "GET", f"/user/{USER}/cart")[0] == 404

    cart = cart_app(product_url, closed)  # loms is down (a fresh cart database)
    status, body = send(cart, "POST", f"/user/{USER}/cart/{BOOK}", {"count": 1})
    assert (status, body["code"]) == (503, 14)
    assert send(cart, "GET", f"/user/{USER}/cart")[0] == 404
    bootstrap.cart_service().carts.add(USER, BOOK, 1, limit=10)  # a line put there before loms went down
    status, body = send(cart, "POST", f"/checkout/{USER}")
    assert (status, body["code"]) == (503, 14)
    assert bootstrap.cart_service().carts.items_of(USER) == {BOOK: 1}
