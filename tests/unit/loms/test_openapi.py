"""loms's openapi.yaml against the function table and the real handlers (on the in-memory fakes).

The document must accept exactly the requests the handlers accept, and describe every reply they give.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import jsonschema_rs
import pytest
import yaml

from functions import table
from functions.loms import bootstrap
from shared_lib import web
from tests.unit.idempotency_fake import InMemoryIdempotencyStore
from tests.unit.loms.fakes import InMemoryLoms

ROOT = Path(__file__).resolve().parents[3]
DOC: dict[str, Any] = yaml.safe_load(
    (ROOT / "functions" / "loms" / "openapi.yaml").read_text(encoding="utf-8")
)
SKU = 1076963


def schema_validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft4Validator({**schema, "components": DOC["components"]})


def operation(function: str) -> dict[str, Any]:
    route = table.route(function)
    return dict(DOC["paths"][route.path][route.method.lower()])


def response_schema(function: str, status: int) -> dict[str, Any]:
    response = operation(function)["responses"][str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return dict(response["content"]["application/json"]["schema"])


@pytest.fixture
def call() -> Iterator[Any]:
    """call(function, path, body, headers, method) through the real handler; its reply must be documented."""
    world = InMemoryLoms()
    world.put_stock(SKU, total_count=300, reserved=35)
    world.bootstrap(idempotency=InMemoryIdempotencyStore())
    main = str(ROOT / "functions" / "loms" / "main.py")
    apps = {
        f.name: functions_framework.create_app(target=f.name, source=main) for f in table.functions_of("loms")
    }

    def run(
        function: str, path: str, body: Any = None, headers: dict[str, str] | None = None, method: str = ""
    ) -> Any:
        client = apps[function].test_client()
        method = method or table.route(function).method
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        response = client.open(path, method=method, data=data, headers=headers or {})
        assert response.content_type == "application/json"
        errors = [
            e.message
            for e in schema_validator(response_schema(function, response.status_code)).iter_errors(
                response.json
            )
        ]
        assert errors == [], (function, response.status_code, response.json)
        return response

    yield run
    bootstrap.reset()


def public_routes() -> list[web.Route]:
    """The document is the public HTTP contract: the cron functions are cluster-internal (a PingSource
    POSTs to them), so they are not in it, as tests/contract/test_openapi.py expects too."""
    return [table.route(f.name) for f in table.functions_of("loms") if f.trigger == "http"]


def test_every_loms_route_is_documented_and_nothing_else() -> None:
    documented = {
        (path, method.upper(), op["operationId"])
        for path, ops in DOC["paths"].items()
        for method, op in ops.items()
    }
    routes = {(r.path, r.method, r.function) for r in public_routes()}
    assert documented == routes


def test_internal_functions_are_internal_and_undocumented() -> None:
    internal = [f for f in table.functions_of("loms") if f.trigger != "http"]
    assert {f.name for f in internal} == {"relay_outbox", "cancel_stale_orders"}
    for function in internal:
        assert function.public is False
        assert function.path.startswith("/internal/")
        assert function.path not in DOC["paths"]
        assert function.path in DOC["info"]["description"]  # named there, so a reader knows they exist


def test_mutating_routes_document_the_idempotency_key_and_422() -> None:
    for route in public_routes():
        parameters = [p.get("$ref", "") for p in operation(route.function).get("parameters", [])]
        has_key = "#/components/parameters/IdempotencyKey" in parameters
        assert has_key == route.idempotent
        assert ("422" in operation(route.function)["responses"]) == route.idempotent


CANDIDATE_IDS: list[Any] = [
    1, "1", "0001", 9223372036854775807, "9223372036854775807", "09223372036854775807",
    0, "0", "000", -1, "-1", 9223372036854775808, "9223372036854775808", "9999999999999999999", "1" * 25,
    1.0, 1.5, "1.5", "1e3", True, None, "", " 1", "1\n", "abc", [1], {"a": 1}, "٣",
]  # fmt: skip
CANDIDATE_COUNTS: list[Any] = [1, 4294967295, 0, 4294967296, -1, "1", 1.0, True, None]


@pytest.mark.parametrize("value", CANDIDATE_IDS, ids=repr)
def test_the_document_accepts_exactly_the_ids_the_handler_accepts(call: Any, value: Any) -> None:
    body = {"userId": value, "items": [{"sku": SKU, "count": 1}]}
    schema = DOC["paths"]["/order/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    documented = schema_validator(schema).is_valid(body)
    response = call("create_order", "/order/create", body)
    assert documented == (response.status_code == 200), response.json


@pytest.mark.parametrize("value", CANDIDATE_COUNTS, ids=repr)
def test_the_document_accepts_exactly_the_counts_the_handler_accepts(call: Any, value: Any) -> None:
    body = {"userId": 1, "items": [{"sku": SKU, "count": value}]}
    schema = DOC["paths"]["/order/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    documented = schema_validator(schema).is_valid(body)
    response = call("create_order", "/order/create", body)
    assert documented == (response.json.get("code") != 3), response.json


def test_every_reply_of_a_session_is_documented(call: Any) -> None:
    order = call(
        "create_order", "/order/create", {"userId": "31337", "items": [{"sku": str(SKU), "count": 3}]}
    )
    order_id = order.json["orderId"]
    call("create_order", "/order/create", {"userId": 1, "items": [{"sku": SKU, "count": 4294967295}]})
    call("create_order", "/order/create", {"userId": 1, "items": []})
    call("create_order", "/order/create", b"x" * (1024 * 1024 + 1))
    call(
        "create_order",
        "/order/create",
        {"userId": 1, "items": [{"sku": SKU, "count": 1}]},
        {"Idempotency-Key": "k"},
    )
    call(
        "create_order",
        "/order/create",
        {"userId": 2, "items": [{"sku": SKU, "count": 1}]},
        {"Idempotency-Key": "k"},
    )
    call("order_info", f"/order/info?orderId={order_id}")
    call("order_info", "/order/info?orderId=2")  # the failed order
    call("order_info", "/order/info?orderId=404")
    call("order_info", "/order/info?orderId=x")
    call("pay_order", "/order/pay", {"orderId": order_id})
    call("pay_order", "/order/pay", {"orderId": order_id})
    call("cancel_order", "/order/cancel", {"orderId": order_id})
    call("cancel_order", "/order/cancel", {"orderId": "404"})
    call("cancel_order", "/order/cancel", b"{")
    call("stock_info", f"/stock/info?sku={SKU}")
    call("stock_info", "/stock/info?sku=404")
    call("stock_info", "/stock/info")
    for function in ("create_order", "order_info", "pay_order", "cancel_order", "stock_info"):
        path = table.route(function).path
        wrong = "PUT" if table.route(function).method == "POST" else "DELETE"
        assert call(function, path, method=wrong).status_code == 405
