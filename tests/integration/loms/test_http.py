"""The loms handlers on the real adapters and the real Idempotency-Key store, through a Flask test client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from functions.loms import bootstrap
from functions.loms.domain import StockLevel
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.postgres import ConnectionPool
from tests.integration.loms.conftest import PgLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]
MAIN = Path(__file__).resolve().parents[3] / "functions" / "loms" / "main.py"


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    targets = ("create_order", "order_info", "pay_order", "cancel_order", "stock_info")
    return {t: functions_framework.create_app(target=t, source=str(MAIN)) for t in targets}


@pytest.fixture
def wired(loms: PgLoms) -> Iterator[PgLoms]:
    store = PgIdempotencyStore(ConnectionPool(loms.shards.stock.dsn.url(), size=4, name="loms-idempotency"))
    bootstrap.bootstrap(
        units=loms.units, orders=loms.service.orders, stock=loms.service.stock, idempotency=store
    )
    yield loms
    bootstrap.reset()
    store.pool.close()


def post(apps: dict[str, Any], target: str, path: str, body: Any, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return apps[target].test_client().post(path, data=json.dumps(body), headers=headers)


def test_the_whole_flow_over_http(apps: dict[str, Any], wired: PgLoms, unique_id: UniqueId) -> None:
    user, sku = wired.user(unique_id()), unique_id()
    wired.put_stock(sku, 300, 35)
    created = post(
        apps, "create_order", "/order/create", {"userId": str(user), "items": [{"sku": sku, "count": 3}]}
    )
    assert created.status_code == 200
    order_id = created.json["orderId"]
    assert isinstance(order_id, str) and int(order_id) % wired.shard_count == wired.home_shard
    info = apps["order_info"].test_client().get(f"/order/info?orderId={order_id}")
    assert info.json == {
        "status": "awaiting payment",
        "userId": str(user),
        "items": [{"sku": str(sku), "count": 3}],
    }
    assert apps["stock_info"].test_client().get(f"/stock/info?sku={sku}").json == {"count": 262}
    assert post(apps, "pay_order", "/order/pay", {"orderId": order_id}).json == {}
    assert post(apps, "pay_order", "/order/pay", {"orderId": order_id}).status_code == 200
    cancel = post(apps, "cancel_order", "/order/cancel", {"orderId": order_id})
    assert (cancel.status_code, cancel.json["code"]) == (400, 9)
    assert apps["stock_info"].test_client().get(f"/stock/info?sku={sku}").json == {"count": 262}
    assert wired.level(sku) == StockLevel(sku, 297, 35)


def test_a_bad_request_stores_nothing(apps: dict[str, Any], wired: PgLoms, unique_id: UniqueId) -> None:
    user, sku = wired.user(unique_id()), unique_id()
    wired.put_stock(sku, 10)
    for body in (
        {"userId": user, "items": []},
        {"userId": user, "items": [{"sku": sku, "count": 0}]},
        {"userId": True, "items": [{"sku": sku, "count": 1}]},
    ):
        response = post(apps, "create_order", "/order/create", body)
        assert (response.status_code, response.json["code"]) == (400, 3)
    assert wired.orders_of(user) == []
    assert wired.level(sku) == StockLevel(sku, 10, 0)


def test_an_idempotency_key_repeat_answers_the_first_reply_and_creates_one_order(
    apps: dict[str, Any], wired: PgLoms, unique_id: UniqueId
) -> None:
    user, sku = wired.user(unique_id()), unique_id()
    wired.put_stock(sku, 10)
    body = {"userId": str(user), "items": [{"sku": str(sku), "count": 2}]}
    key = f"create-{unique_id()}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: post(apps, "create_order", "/order/create", body, key), range(8)))
    assert {r.status_code for r in replies} == {200}
    assert len({r.json["orderId"] for r in replies}) == 1
    assert len(wired.orders_of(user)) == 1
    assert wired.level(sku) == StockLevel(sku, 10, 2)
    other = post(
        apps, "create_order", "/order/create", {**body, "items": [{"sku": str(sku), "count": 1}]}, key
    )
    assert (other.status_code, other.json["code"]) == (422, 3)
    assert len(wired.orders_of(user)) == 1
    assert wired.level(sku) == StockLevel(sku, 10, 2)


def test_idempotency_keys_on_pay_and_cancel(apps: dict[str, Any], wired: PgLoms, unique_id: UniqueId) -> None:
    user, sku = wired.user(unique_id()), unique_id()
    wired.put_stock(sku, 10)
    first = post(apps, "create_order", "/order/create", {"userId": user, "items": [{"sku": sku, "count": 2}]})
    second = post(
        apps, "create_order", "/order/create", {"userId": user, "items": [{"sku": sku, "count": 3}]}
    )
    key = f"pay-{unique_id()}"
    for _ in range(2):
        assert (
            post(apps, "pay_order", "/order/pay", {"orderId": first.json["orderId"]}, key).status_code == 200
        )
    assert post(apps, "pay_order", "/order/pay", {"orderId": second.json["orderId"]}, key).status_code == 422
    cancel_key = f"cancel-{unique_id()}"
    for _ in range(2):
        response = post(
            apps, "cancel_order", "/order/cancel", {"orderId": second.json["orderId"]}, cancel_key
        )
        assert response.status_code == 200
    assert wired.level(sku) == StockLevel(sku, 8, 0)
