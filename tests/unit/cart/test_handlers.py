"""Each cart handler through a real Flask test client, on a service wired to in-memory fakes.

Every row of the contract's error columns is here, and after every error the cart is checked to be as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

from functions.cart import bootstrap
from tests.unit.cart.fakes import BOOK, PEN, TEA, Shop

USER = 31337
TARGETS = ("add_item", "delete_item", "clear_cart", "list_cart", "checkout")
BAD_IDS = ("abc", "0", "-5", "9223372036854775808", "1.5", "1e3", "%20")

_apps: dict[str, FlaskClient] = {}


def app(target: str) -> FlaskClient:
    if target not in _apps:
        flask_app = functions_framework.create_app(target=target, source="functions/cart/main.py")
        _apps[target] = flask_app.test_client()
    return _apps[target]


@pytest.fixture
def shop() -> Iterator[Shop]:
    shop = Shop()
    shop.bootstrap()
    yield shop
    bootstrap.reset()


def add(count: Any, user: int | str = USER, sku: int | str = BOOK.sku, **kwargs: Any) -> Any:
    return app("add_item").post(f"/user/{user}/cart/{sku}", data=json.dumps({"count": count}), **kwargs)


def assert_error(response: Any, status: int, code: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert response.json["code"] == code
    assert isinstance(response.json["message"], str)
    assert response.json["details"] == []


# --- add_item ------------------------------------------------------------------------------------------


@pytest.mark.function("add_item")
def test_add_answers_an_empty_object_and_sums_repeated_adds(shop: Shop) -> None:
    response = add(2)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.json == {}
    assert add(3).status_code == 200
    assert shop.carts.items_of(USER) == {BOOK.sku: 5}


@pytest.mark.function("add_item")
@pytest.mark.parametrize("bad", BAD_IDS)
def test_add_with_a_bad_user_or_sku_is_400_and_stores_nothing(shop: Shop, bad: str) -> None:
    assert_error(add(1, user=bad), 400, 3)
    assert_error(add(1, sku=bad), 400, 3)
    assert shop.carts.carts == {}


@pytest.mark.function("add_item")
@pytest.mark.parametrize("count", [0, -1, 4294967296, 2**64, "2", True, False, 1.5, 2.0, None, [1], {"n": 1}])
def test_add_with_a_bad_count_is_400_and_stores_nothing(shop: Shop, count: Any) -> None:
    assert_error(add(count), 400, 3)
    assert shop.carts.carts == {}


MALFORMED = [b"", b" ", b"{", b"[]", b"2", b"null", b'"count"', b"{}", b'{"Count": 1}', b"\xff"]
MALFORMED += [b'{"count": 1, "sku": 2}', b'{"count": 1, "count": "x"}']
MALFORMED += [b"[" * 100_000, b'{"count": 1' + b"0" * 5000 + b"}"]  # deep nesting; a number too long to parse


@pytest.mark.function("add_item")
@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_add_with_a_missing_or_malformed_body_is_400_and_stores_nothing(shop: Shop, body: bytes) -> None:
    assert_error(app("add_item").post(f"/user/{USER}/cart/{BOOK.sku}", data=body), 400, 3)
    assert shop.carts.carts == {}


@pytest.mark.function("add_item")
def test_add_accepts_the_largest_uint32_count(shop: Shop) -> None:
    assert add(4294967295, sku=PEN.sku).status_code == 200
    assert shop.carts.items_of(USER) == {PEN.sku: 4294967295}


@pytest.mark.function("add_item")
def test_add_of_an_unknown_sku_is_412(shop: Shop) -> None:
    assert_error(add(1, sku=404), 412, 9)
    assert shop.carts.carts == {}


@pytest.mark.function("add_item")
def test_add_past_the_available_stock_is_412_and_keeps_the_cart(shop: Shop) -> None:
    assert add(7).status_code == 200
    assert_error(add(4), 412, 9)  # 11 > 10 available
    assert shop.carts.items_of(USER) == {BOOK.sku: 7}
    assert_error(add(1, sku=TEA.sku), 412, 9)  # no stock record in loms
    assert shop.carts.items_of(USER) == {BOOK.sku: 7}


@pytest.mark.function("add_item")
@pytest.mark.parametrize("down", ["catalog", "stock"])
def test_add_during_a_product_or_loms_outage_is_503_and_keeps_the_cart(shop: Shop, down: str) -> None:
    assert add(1).status_code == 200
    getattr(shop, down).down = True
    assert_error(add(1), 503, 14)
    assert shop.carts.items_of(USER) == {BOOK.sku: 1}


@pytest.mark.function("add_item")
def test_add_with_a_body_over_a_mebibyte_is_413(shop: Shop) -> None:
    body = b'{"count": 1' + b" " * (1024 * 1024) + b"}"
    assert_error(app("add_item").post(f"/user/{USER}/cart/{BOOK.sku}", data=body), 413, 3)
    assert shop.carts.carts == {}


@pytest.mark.function("add_item")
def test_add_answers_405_with_allow_for_another_method(shop: Shop) -> None:
    response = app("add_item").put(f"/user/{USER}/cart/{BOOK.sku}", data='{"count": 1}')
    assert_error(response, 405, 3)
    assert response.headers["Allow"] == "POST"
    assert shop.carts.carts == {}


@pytest.mark.function("add_item")
def test_add_repeated_with_an_idempotency_key_adds_once(shop: Shop) -> None:
    key = {"Idempotency-Key": "add-1"}
    assert add(2, headers=key).status_code == 200
    again = add(2, headers=key)
    assert again.status_code == 200
    assert again.json == {}
    assert shop.carts.items_of(USER) == {BOOK.sku: 2}
    assert_error(add(3, headers=key), 422, 3)  # same key, another body
    assert shop.carts.items_of(USER) == {BOOK.sku: 2}
    assert add(2, headers={"Idempotency-Key": "add-2"}).status_code == 200
    assert shop.carts.items_of(USER) == {BOOK.sku: 4}


@pytest.mark.function("add_item")
def test_a_refusal_is_replayed_for_the_same_key_even_once_stock_arrives(shop: Shop) -> None:
    key = {"Idempotency-Key": "add-big"}
    assert_error(add(11, headers=key), 412, 9)
    shop.stock.stock[BOOK.sku] = 100
    assert_error(add(11, headers=key), 412, 9)
    assert shop.carts.carts == {}


@pytest.mark.function("add_item")
def test_an_outage_is_not_remembered_so_the_same_key_may_be_retried(shop: Shop) -> None:
    key = {"Idempotency-Key": "add-retry"}
    shop.catalog.down = True
    assert_error(add(1, headers=key), 503, 14)
    shop.catalog.down = False
    assert add(1, headers=key).status_code == 200
    assert shop.carts.items_of(USER) == {BOOK.sku: 1}


@pytest.mark.function("add_item")
def test_a_malformed_idempotency_key_is_400(shop: Shop) -> None:
    assert_error(add(1, headers={"Idempotency-Key": "x" * 201}), 400, 3)
    assert shop.carts.carts == {}


# --- delete_item and clear_cart ------------------------------------------------------------------------


def fill(shop: Shop) -> None:
    shop.service.add_item(USER, BOOK.sku, 2)
    shop.service.add_item(USER, PEN.sku, 1)


@pytest.mark.function("delete_item")
def test_delete_removes_the_line_and_is_204_also_when_absent(shop: Shop) -> None:
    fill(shop)
    response = app("delete_item").delete(f"/user/{USER}/cart/{BOOK.sku}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert shop.carts.items_of(USER) == {PEN.sku: 1}
    assert app("delete_item").delete(f"/user/{USER}/cart/{BOOK.sku}").status_code == 204
    assert app("delete_item").delete(f"/user/{USER + 1}/cart/{BOOK.sku}").status_code == 204
    assert shop.carts.items_of(USER) == {PEN.sku: 1}


@pytest.mark.function("delete_item")
@pytest.mark.parametrize("bad", BAD_IDS)
def test_delete_with_bad_ids_is_400_and_removes_nothing(shop: Shop, bad: str) -> None:
    fill(shop)
    assert_error(app("delete_item").delete(f"/user/{bad}/cart/{BOOK.sku}"), 400, 3)
    assert_error(app("delete_item").delete(f"/user/{USER}/cart/{bad}"), 400, 3)
    assert shop.carts.items_of(USER) == {BOOK.sku: 2, PEN.sku: 1}


@pytest.mark.function("clear_cart")
def test_clear_empties_the_cart_and_is_204_also_when_there_is_none(shop: Shop) -> None:
    fill(shop)
    shop.service.add_item(USER + 1, BOOK.sku, 1)
    response = app("clear_cart").delete(f"/user/{USER}/cart")
    assert response.status_code == 204
    assert shop.carts.items_of(USER) == {}
    assert shop.carts.items_of(USER + 1) == {BOOK.sku: 1}  # other users' carts are theirs
    assert app("clear_cart").delete(f"/user/{USER}/cart").status_code == 204


@pytest.mark.function("clear_cart")
@pytest.mark.parametrize("bad", BAD_IDS)
def test_clear_with_a_bad_user_is_400(shop: Shop, bad: str) -> None:
    fill(shop)
    assert_error(app("clear_cart").delete(f"/user/{bad}/cart"), 400, 3)
    assert shop.carts.items_of(USER) == {BOOK.sku: 2, PEN.sku: 1}


# --- list_cart -----------------------------------------------------------------------------------------


@pytest.mark.function("list_cart")
def test_list_shows_lines_by_sku_with_names_prices_and_the_total(shop: Shop) -> None:
    shop.service.add_item(USER, PEN.sku, 3)
    shop.service.add_item(USER, BOOK.sku, 2)
    response = app("list_cart").get(f"/user/{USER}/cart")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.json == {
        "items": [
            {"sku": BOOK.sku, "name": BOOK.name, "count": 2, "price": 3379},
            {"sku": PEN.sku, "name": PEN.name, "count": 3, "price": 100},
        ],
        "total_price": 2 * 3379 + 3 * 100,
    }


@pytest.mark.function("list_cart")
def test_list_answers_these_exact_bytes(shop: Shop) -> None:
    """The answer's bytes, pinned: compact, names as UTF-8 (not \\u escapes), fields in this order."""
    shop.carts.add(USER, TEA.sku, 1, limit=10)  # loms keeps no stock of it: straight into the cart
    shop.service.add_item(USER, PEN.sku, 3)
    shop.service.add_item(USER, BOOK.sku, 2)
    for _ in range(2):  # and the same again
        response = app("list_cart").get(f"/user/{USER}/cart")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert (
            response.get_data()
            == (
                '{"items":['
                '{"sku":1076963,"name":"Теория нравственных чувств | Смит Адам","count":2,"price":3379},'
                '{"sku":1148162,"name":"Шариковая ручка","count":3,"price":100},'
                '{"sku":2956315,"name":"Чай зелёный","count":1,"price":250}],"total_price":7308}'
            ).encode()
        )


@pytest.mark.function("list_cart")
def test_list_of_an_empty_or_absent_cart_is_404(shop: Shop) -> None:
    assert_error(app("list_cart").get(f"/user/{USER}/cart"), 404, 5)
    shop.service.add_item(USER, BOOK.sku, 1)
    shop.service.clear_cart(USER)
    assert_error(app("list_cart").get(f"/user/{USER}/cart"), 404, 5)


@pytest.mark.function("list_cart")
@pytest.mark.parametrize("bad", BAD_IDS)
def test_list_with_a_bad_user_is_400(shop: Shop, bad: str) -> None:
    assert_error(app("list_cart").get(f"/user/{bad}/cart"), 400, 3)


@pytest.mark.function("list_cart")
def test_list_during_a_product_outage_is_503(shop: Shop) -> None:
    fill(shop)
    shop.catalog.down = True
    assert_error(app("list_cart").get(f"/user/{USER}/cart"), 503, 14)


@pytest.mark.function("list_cart")
def test_list_answers_405_for_post(shop: Shop) -> None:
    response = app("list_cart").post(f"/user/{USER}/cart")
    assert_error(response, 405, 3)
    assert response.headers["Allow"] == "GET"


# --- checkout ------------------------------------------------------------------------------------------


@pytest.mark.function("checkout")
def test_checkout_answers_the_order_id_as_a_number_and_empties_the_cart(shop: Shop) -> None:
    fill(shop)
    response = app("checkout").post(f"/checkout/{USER}")
    assert response.status_code == 200
    assert response.json == {"order_id": 1}
    assert shop.orders.orders[1] == (USER, {BOOK.sku: 2, PEN.sku: 1})
    assert shop.carts.items_of(USER) == {}


@pytest.mark.function("checkout")
def test_checkout_of_an_empty_cart_is_404_and_orders_nothing(shop: Shop) -> None:
    assert_error(app("checkout").post(f"/checkout/{USER}"), 404, 5)
    assert shop.orders.orders == {}


@pytest.mark.function("checkout")
@pytest.mark.parametrize("bad", BAD_IDS)
def test_checkout_with_a_bad_user_is_400_and_orders_nothing(shop: Shop, bad: str) -> None:
    fill(shop)
    assert_error(app("checkout").post(f"/checkout/{bad}"), 400, 3)
    assert shop.orders.orders == {}
    assert shop.carts.items_of(USER) == {BOOK.sku: 2, PEN.sku: 1}


@pytest.mark.function("checkout")
def test_checkout_refused_by_loms_is_412_and_keeps_the_cart(shop: Shop) -> None:
    fill(shop)
    shop.orders.reject = True
    assert_error(app("checkout").post(f"/checkout/{USER}"), 412, 9)
    assert shop.carts.items_of(USER) == {BOOK.sku: 2, PEN.sku: 1}


@pytest.mark.function("checkout")
def test_checkout_during_a_loms_outage_is_503_and_keeps_the_cart(shop: Shop) -> None:
    fill(shop)
    shop.orders.down = True
    assert_error(app("checkout").post(f"/checkout/{USER}"), 503, 14)
    assert shop.carts.items_of(USER) == {BOOK.sku: 2, PEN.sku: 1}


@pytest.mark.function("checkout")
def test_checkout_repeated_with_an_idempotency_key_orders_once(shop: Shop) -> None:
    fill(shop)
    key = {"Idempotency-Key": "checkout-1"}
    first = app("checkout").post(f"/checkout/{USER}", headers=key)
    shop.service.add_item(USER, PEN.sku, 1)  # the cart fills again; the repeat must not order it
    again = app("checkout").post(f"/checkout/{USER}", headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json == first.json == {"order_id": 1}
    assert list(shop.orders.orders) == [1]
    assert shop.carts.items_of(USER) == {PEN.sku: 1}


@pytest.mark.function("checkout")
def test_checkout_answers_405_for_get(shop: Shop) -> None:
    response = app("checkout").get(f"/checkout/{USER}")
    assert_error(response, 405, 3)
    assert response.headers["Allow"] == "POST"


# --- every handler -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_an_unknown_path_is_404(shop: Shop, target: str) -> None:
    assert_error(app(target).get("/users/1/carts"), 404, 5)


@pytest.mark.parametrize("target", TARGETS)
def test_an_unexpected_bug_is_500_without_details(
    monkeypatch: pytest.MonkeyPatch, shop: Shop, target: str
) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("SELECT secret FROM somewhere")

    for name in ("items_of", "add", "remove", "clear"):
        monkeypatch.setattr(shop.carts, name, broken)
    calls: dict[str, Callable[[], Any]] = {
        "add_item": lambda: add(1),
        "delete_item": lambda: app(target).delete(f"/user/{USER}/cart/{BOOK.sku}"),
        "clear_cart": lambda: app(target).delete(f"/user/{USER}/cart"),
        "list_cart": lambda: app(target).get(f"/user/{USER}/cart"),
        "checkout": lambda: app(target).post(f"/checkout/{USER}"),
    }
    response = calls[target]()
    assert_error(response, 500, 13)
    assert "SELECT" not in response.get_data(as_text=True)
