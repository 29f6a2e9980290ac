"""Each loms handler through a real Flask test client, on a service wired to the in-memory fakes.

Every row of the contract's error columns is a case here, and each bad request must leave nothing stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from functions.loms import bootstrap
from functions.loms.domain import StockLevel
from tests.unit.idempotency_fake import InMemoryIdempotencyStore
from tests.unit.loms.fakes import InMemoryLoms

MAIN = Path(__file__).resolve().parents[3] / "functions" / "loms" / "main.py"
SKU, SHORT_SKU = 1076963, 2956315
Client = Callable[[str], FlaskClient]


def json_of(response: TestResponse) -> Any:
    """The answer's JSON body (werkzeug types it `Any | None`: None when the answer is not JSON)."""
    return response.json


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    targets = ("create_order", "order_info", "pay_order", "cancel_order", "stock_info")
    return {t: functions_framework.create_app(target=t, source=str(MAIN)) for t in targets}


@pytest.fixture
def loms() -> Iterator[InMemoryLoms]:
    world = InMemoryLoms()
    world.put_stock(SKU, total_count=300, reserved=35)
    world.put_stock(SHORT_SKU, total_count=2, reserved=0)
    world.bootstrap(idempotency=InMemoryIdempotencyStore())
    yield world
    bootstrap.reset()


@pytest.fixture
def client(apps: dict[str, Any], loms: InMemoryLoms) -> Iterator[Client]:
    yield lambda target: apps[target].test_client()


def create(client: Client, body: Any, **kwargs: Any) -> Any:
    return client("create_order").post("/order/create", data=json.dumps(body), **kwargs)


def assert_error(response: Any, status: int, code: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert response.json["code"] == code
    assert response.json["details"] == []
    assert isinstance(response.json["message"], str)


# --- create_order -------------------------------------------------------------------------------------


@pytest.mark.function("create_order")
def test_create_order_answers_the_id_as_a_string(client: Client, loms: InMemoryLoms) -> None:
    response = create(client, {"userId": "31337", "items": [{"sku": str(SKU), "count": 3}]})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.json == {"orderId": "1"}
    assert loms.level(SKU) == StockLevel(SKU, 300, 38)


@pytest.mark.function("create_order")
def test_create_order_accepts_int64_fields_as_numbers(client: Client, loms: InMemoryLoms) -> None:
    response = create(client, {"userId": 9223372036854775807, "items": [{"sku": SKU, "count": 4294967295}]})
    assert_error(response, 400, 9)  # well formed, but far more than the stock
    response = create(
        client, {"userId": 31337, "items": [{"sku": SKU, "count": 1}, {"sku": "0001076963", "count": 1}]}
    )
    assert response.status_code == 200
    assert loms.level(SKU) == StockLevel(SKU, 300, 37)


BAD_CREATE_BODIES: list[Any] = [
    {"items": [{"sku": SKU, "count": 1}]},
    {"userId": 31337},
    {"userId": 31337, "items": []},
    {"userId": 31337, "items": {"sku": SKU, "count": 1}},
    {"userId": 31337, "items": [{"sku": SKU}]},
    {"userId": 31337, "items": [{"count": 1}]},
    {"userId": 31337, "items": [None]},
    {"userId": 31337, "items": [{"sku": SKU, "count": 1}], "extra": 1},
    {"userId": 31337, "items": [{"sku": SKU, "count": 1, "price": 5}]},
    [],
    "text",
    None,
    17,
]
for bad_id in (
    0,
    -1,
    "0",
    "-1",
    "abc",
    "",
    " 1",
    "1 ",
    "+1",
    "1.5",
    "1e3",
    "٣",
    1.5,
    1.0,
    True,
    False,
    None,
    [1],
    {"a": 1},
    9223372036854775808,
    "9223372036854775808",
    "1" * 5000,
    10**400,
):
    BAD_CREATE_BODIES.append({"userId": bad_id, "items": [{"sku": SKU, "count": 1}]})
    BAD_CREATE_BODIES.append({"userId": 31337, "items": [{"sku": bad_id, "count": 1}]})
for bad_count in (0, -1, 4294967296, "3", 3.0, 2.5, True, None, "x"):
    BAD_CREATE_BODIES.append({"userId": 31337, "items": [{"sku": SKU, "count": bad_count}]})


@pytest.mark.function("create_order")
@pytest.mark.parametrize("body", BAD_CREATE_BODIES, ids=lambda b: json.dumps(b)[:60])
def test_create_order_refuses_bad_input_and_stores_nothing(
    client: Client, loms: InMemoryLoms, body: Any
) -> None:
    assert_error(create(client, body), 400, 3)
    assert loms.order_count() == 0
    assert loms.level(SKU) == StockLevel(SKU, 300, 35)


@pytest.mark.function("create_order")
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b"{'userId': 1}",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"userId": ' + b"1" * 5000 + b"}",
        b"NaN",
    ],
    ids=["empty", "blank", "truncated", "single-quotes", "not-utf8", "deep", "huge-number", "nan"],
)
def test_create_order_refuses_malformed_json(client: Client, loms: InMemoryLoms, raw: bytes) -> None:
    response = client("create_order").post("/order/create", data=raw, content_type="application/json")
    assert_error(response, 400, 3)
    assert loms.order_count() == 0


@pytest.mark.function("create_order")
def test_merged_count_over_uint32_is_invalid(client: Client, loms: InMemoryLoms) -> None:
    items = [{"sku": SKU, "count": 4294967295}, {"sku": SKU, "count": 1}]
    assert_error(create(client, {"userId": 1, "items": items}), 400, 3)
    assert loms.order_count() == 0


@pytest.mark.function("create_order")
def test_short_stock_is_code_9_and_the_order_is_stored_failed(client: Client, loms: InMemoryLoms) -> None:
    body = {"userId": "31337", "items": [{"sku": SKU, "count": 1}, {"sku": SHORT_SKU, "count": 3}]}
    response = create(client, body)
    assert_error(response, 400, 9)
    assert "order 1 failed" in response.json["message"]
    info = client("order_info").get("/order/info?orderId=1")
    assert info.json == {
        "status": "failed",
        "userId": "31337",
        "items": [{"sku": str(SKU), "count": 1}, {"sku": str(SHORT_SKU), "count": 3}],
    }
    assert loms.level(SKU) == StockLevel(SKU, 300, 35)
    assert_error(create(client, {"userId": 1, "items": [{"sku": 404, "count": 1}]}), 400, 9)


@pytest.mark.function("create_order")
def test_create_order_body_over_one_mib_is_413(client: Client, loms: InMemoryLoms) -> None:
    body = {"userId": 1, "items": [{"sku": SKU, "count": 1}], "pad": "x" * (1024 * 1024)}
    assert_error(create(client, body), 413, 3)
    assert loms.order_count() == 0


@pytest.mark.function("create_order")
def test_idempotency_key_repeats_the_first_answer(client: Client, loms: InMemoryLoms) -> None:
    body = {"userId": "31337", "items": [{"sku": SKU, "count": 2}]}
    first = create(client, body, headers={"Idempotency-Key": "k-1"})
    again = create(client, body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert first.json == again.json == {"orderId": "1"}
    assert loms.order_count() == 1
    assert loms.level(SKU) == StockLevel(SKU, 300, 37)
    other = create(client, {**body, "userId": "1"}, headers={"Idempotency-Key": "k-1"})
    assert_error(other, 422, 3)
    assert loms.order_count() == 1
    assert_error(create(client, body, headers={"Idempotency-Key": "has space"}), 400, 3)
    assert create(client, body, headers={"Idempotency-Key": "k-2"}).json == {"orderId": "2"}


@pytest.mark.function("create_order")
def test_idempotency_key_repeats_a_refusal_too(client: Client, loms: InMemoryLoms) -> None:
    body = {"userId": "31337", "items": [{"sku": SHORT_SKU, "count": 3}]}
    first = create(client, body, headers={"Idempotency-Key": "short"})
    loms.put_stock(SHORT_SKU, total_count=100, reserved=0)
    again = create(client, body, headers={"Idempotency-Key": "short"})
    assert_error(again, 400, 9)
    assert again.json == first.json
    assert loms.order_count() == 1


# --- routing, shared by every function ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "method", "allow"),
    [
        ("create_order", "/order/create", "get", "POST"),
        ("order_info", "/order/info", "post", "GET"),
        ("pay_order", "/order/pay", "put", "POST"),
        ("cancel_order", "/order/cancel", "delete", "POST"),
        ("stock_info", "/stock/info", "patch", "GET"),
    ],
)
def test_wrong_method_is_405_and_unknown_path_404(
    client: Client, target: str, path: str, method: str, allow: str
) -> None:
    response = getattr(client(target), method)(path)
    assert_error(response, 405, 3)
    assert response.headers["Allow"] == allow
    assert_error(client(target).get(path + "/extra"), 404, 5)


# --- order_info ---------------------------------------------------------------------------------------


@pytest.mark.function("order_info")
def test_order_info_shows_items_sorted_by_sku(client: Client, loms: InMemoryLoms) -> None:
    create(client, {"userId": "31337", "items": [{"sku": SKU, "count": 3}, {"sku": SHORT_SKU, "count": 1}]})
    response = client("order_info").get("/order/info?orderId=1")
    assert response.status_code == 200
    assert response.json == {
        "status": "awaiting payment",
        "userId": "31337",
        "items": [{"sku": "1076963", "count": 3}, {"sku": "2956315", "count": 1}],
    }


@pytest.mark.function("order_info")
@pytest.mark.parametrize(
    "query",
    [
        "",
        "orderId=",
        "orderId=abc",
        "orderId=0",
        "orderId=-1",
        "orderId=1.5",
        "orderId=9223372036854775808",
        "orderId=" + "9" * 5000,
        "order_id=1",
        "orderId=%201",
    ],
)
def test_order_info_refuses_bad_ids(client: Client, query: str) -> None:
    assert_error(client("order_info").get(f"/order/info?{query}"), 400, 3)


@pytest.mark.function("order_info")
def test_order_info_unknown_order_is_404(client: Client) -> None:
    assert_error(client("order_info").get("/order/info?orderId=9223372036854775807"), 404, 5)


# --- pay_order and cancel_order -----------------------------------------------------------------------


@pytest.mark.function("pay_order")
def test_pay_order(client: Client, loms: InMemoryLoms) -> None:
    create(client, {"userId": 1, "items": [{"sku": SKU, "count": 3}]})
    for body in ({"orderId": "1"}, {"orderId": 1}):  # the second is a repeat: 200 and no change
        response = client("pay_order").post("/order/pay", data=json.dumps(body))
        assert response.status_code == 200
        assert response.json == {}
        assert loms.level(SKU) == StockLevel(SKU, 297, 35)
    assert_error(client("cancel_order").post("/order/cancel", json={"orderId": "1"}), 400, 9)
    assert_error(client("pay_order").post("/order/pay", json={"orderId": "2"}), 404, 5)


@pytest.mark.function("cancel_order")
def test_cancel_order(client: Client, loms: InMemoryLoms) -> None:
    create(client, {"userId": 1, "items": [{"sku": SKU, "count": 3}]})
    for _ in range(2):
        response = client("cancel_order").post("/order/cancel", json={"orderId": "1"})
        assert response.status_code == 200
        assert response.json == {}
        assert loms.level(SKU) == StockLevel(SKU, 300, 35)
    assert_error(client("pay_order").post("/order/pay", json={"orderId": "1"}), 400, 9)
    assert_error(client("cancel_order").post("/order/cancel", json={"orderId": 2}), 404, 5)
    create(client, {"userId": 1, "items": [{"sku": SHORT_SKU, "count": 3}]})
    assert_error(client("cancel_order").post("/order/cancel", json={"orderId": 2}), 400, 9)  # failed


@pytest.mark.parametrize(("target", "path"), [("pay_order", "/order/pay"), ("cancel_order", "/order/cancel")])
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b"{}",
        b'{"orderId": true}',
        b'{"orderId": 1.0}',
        b'{"orderId": "x"}',
        b'{"orderId": 0}',
        b'{"orderId": "9223372036854775808"}',
        b'{"orderId": 1, "more": 2}',
        b'{"order_id": 1}',
    ],
)
def test_pay_and_cancel_refuse_bad_bodies_and_change_nothing(
    client: Client, loms: InMemoryLoms, target: str, path: str, raw: bytes
) -> None:
    create(client, {"userId": 1, "items": [{"sku": SKU, "count": 3}]})
    assert_error(client(target).post(path, data=raw), 400, 3)
    assert json_of(client("order_info").get("/order/info?orderId=1"))["status"] == "awaiting payment"
    assert loms.level(SKU) == StockLevel(SKU, 300, 38)


@pytest.mark.parametrize(("target", "path"), [("pay_order", "/order/pay"), ("cancel_order", "/order/cancel")])
def test_pay_and_cancel_honour_idempotency_keys(
    client: Client, loms: InMemoryLoms, target: str, path: str
) -> None:
    create(client, {"userId": 1, "items": [{"sku": SKU, "count": 3}]})
    create(client, {"userId": 1, "items": [{"sku": SKU, "count": 3}]})
    headers = {"Idempotency-Key": f"{target}-1"}
    assert client(target).post(path, json={"orderId": "1"}, headers=headers).status_code == 200
    assert client(target).post(path, json={"orderId": "1"}, headers=headers).status_code == 200
    assert_error(client(target).post(path, json={"orderId": "2"}, headers=headers), 422, 3)
    assert json_of(client("order_info").get("/order/info?orderId=2"))["status"] == "awaiting payment"


# --- stock_info ---------------------------------------------------------------------------------------


@pytest.mark.function("stock_info")
def test_stock_info(client: Client, loms: InMemoryLoms) -> None:
    response = client("stock_info").get(f"/stock/info?sku={SKU}")
    assert response.status_code == 200
    assert response.json == {"count": 265}
    loms.put_stock(139818428, total_count=100, reserved=101)
    assert client("stock_info").get("/stock/info?sku=139818428").json == {"count": 0}
    assert_error(client("stock_info").get("/stock/info?sku=404"), 404, 5)


@pytest.mark.function("stock_info")
@pytest.mark.parametrize(
    "query", ["", "sku=", "sku=abc", "sku=0", "sku=-5", "sku=1.5", "sku=9223372036854775808"]
)
def test_stock_info_refuses_bad_skus(client: Client, query: str) -> None:
    assert_error(client("stock_info").get(f"/stock/info?{query}"), 400, 3)


@pytest.mark.function("order_info")
def test_leading_zeros_are_only_zeros(client: Client, loms: InMemoryLoms) -> None:
    create(client, {"userId": "31337", "items": [{"sku": SKU, "count": 1}]})
    many_zeros = "0" * 5000 + "1"
    assert json_of(client("order_info").get(f"/order/info?orderId={many_zeros}"))["userId"] == "31337"
    assert client("pay_order").post("/order/pay", json={"orderId": many_zeros}).status_code == 200
    assert_error(client("order_info").get("/order/info?orderId=" + "0" * 5000), 400, 3)
