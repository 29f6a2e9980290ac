"""cart's openapi.yaml against the function table and the real handlers (on the in-memory fakes).

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
from functions.cart import bootstrap
from tests.unit.cart.fakes import BOOK, PEN, TEA, Shop

ROOT = Path(__file__).resolve().parents[3]
DOC: dict[str, Any] = yaml.safe_load(
    (ROOT / "functions" / "cart" / "openapi.yaml").read_text(encoding="utf-8")
)
USER = 31337
INT64_MAX = 2**63 - 1


def validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft4Validator({**schema, "components": DOC["components"]})


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = DOC["components"][section][name]
    return node


def operation(function: str) -> dict[str, Any]:
    route = table.route(function)
    path = route.path.replace(":id}", "}")
    return dict(DOC["paths"][path][route.method.lower()])


def parameters(function: str) -> list[dict[str, Any]]:
    route = table.route(function)
    path_item = DOC["paths"][route.path.replace(":id}", "}")]
    return [resolve(p) for p in path_item.get("parameters", []) + operation(function).get("parameters", [])]


@pytest.fixture
def call() -> Iterator[Any]:
    """call(function, path, body=None, headers=None, method="") through the real handler; the reply is checked
    to be documented: its status listed for the operation and its body valid against that schema."""
    shop = Shop()
    shop.stock.stock[PEN.sku] = 2**40
    shop.bootstrap()
    main = str(ROOT / "functions" / "cart" / "main.py")
    apps = {
        f.name: functions_framework.create_app(target=f.name, source=main) for f in table.functions_of("cart")
    }

    def run(
        function: str, path: str, body: Any = None, headers: dict[str, str] | None = None, method: str = ""
    ) -> Any:
        client = apps[function].test_client()
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        response = client.open(
            path, method=method or table.route(function).method, data=data, headers=headers
        )
        responses = operation(function)["responses"]
        assert str(response.status_code) in responses, (function, response.status_code, response.json)
        documented = resolve(responses[str(response.status_code)])
        if "content" not in documented:
            assert response.get_data() == b""
            return response
        assert response.content_type == "application/json"
        errors = [
            e.message
            for e in validator(documented["content"]["application/json"]["schema"]).iter_errors(response.json)
        ]
        assert errors == [], (function, response.status_code, response.json)
        for name, header in documented.get("headers", {}).items():
            assert not header.get("required") or name in response.headers
        return response

    run.shop = shop  # type: ignore[attr-defined]
    yield run
    bootstrap.reset()


def test_every_cart_route_is_documented_and_nothing_else() -> None:
    documented = {
        (path, method.upper(), op["operationId"])
        for path, item in DOC["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }
    routes = {(r.path.replace(":id}", "}"), r.method, r.function) for r in table.routes_of("cart")}
    assert documented == routes


def test_mutating_routes_document_the_idempotency_key_and_422() -> None:
    for route in table.routes_of("cart"):
        names = {p["name"] for p in parameters(route.function)}
        assert ("Idempotency-Key" in names) == route.idempotent, route.function
        assert ("422" in operation(route.function)["responses"]) == route.idempotent, route.function


def test_path_ids_are_documented_as_the_router_reads_them() -> None:
    for route in table.routes_of("cart"):
        documented = {p["name"]: p["schema"] for p in parameters(route.function) if p["in"] == "path"}
        ids = {s[1:-1].partition(":")[0] for s in route.segments() if s.startswith("{")}
        assert set(documented) == ids
        for schema in documented.values():
            assert schema == {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX}


CANDIDATE_COUNTS: list[Any] = [1, 2, 4294967295, 0, -1, 4294967296, "2", 1.0, 1.5, True, None, [1]]
CANDIDATE_BODIES: list[Any] = [{}, {"count": 1, "extra": 1}, {"Count": 1}, [], 2, None]


@pytest.mark.parametrize("count", CANDIDATE_COUNTS, ids=repr)
def test_the_document_accepts_exactly_the_counts_the_handler_accepts(call: Any, count: Any) -> None:
    body = {"count": count}
    schema = operation("add_item")["requestBody"]["content"]["application/json"]["schema"]
    documented = validator(schema).is_valid(body)
    response = call("add_item", f"/user/{USER}/cart/{PEN.sku}", body)
    assert documented == (response.status_code == 200), response.json


@pytest.mark.parametrize("body", CANDIDATE_BODIES, ids=repr)
def test_the_document_refuses_the_bodies_the_handler_refuses(call: Any, body: Any) -> None:
    schema = operation("add_item")["requestBody"]["content"]["application/json"]["schema"]
    assert not validator(schema).is_valid(body)
    assert call("add_item", f"/user/{USER}/cart/{PEN.sku}", json.dumps(body).encode()).status_code == 400


@pytest.mark.parametrize("value", [1, INT64_MAX, 0, -1, INT64_MAX + 1], ids=repr)
def test_the_document_accepts_exactly_the_path_ids_the_handler_accepts(call: Any, value: int) -> None:
    schema = parameters("list_cart")[0]["schema"]
    documented = validator(schema).is_valid(value)
    response = call("list_cart", f"/user/{value}/cart")
    assert documented == (response.status_code != 400)


def test_every_reply_of_a_session_is_documented(call: Any) -> None:
    shop: Shop = call.shop
    cart, line = f"/user/{USER}/cart", f"/user/{USER}/cart/{BOOK.sku}"
    call("list_cart", cart)  # 404
    call("checkout", f"/checkout/{USER}")  # 404
    call("add_item", line, {"count": 2})
    call("add_item", line, {"count": 2}, {"Idempotency-Key": "k"})
    call("add_item", line, {"count": 3}, {"Idempotency-Key": "k"})  # 422
    call("add_item", line, {"count": 100})  # 412 stock
    call("add_item", f"/user/{USER}/cart/404", {"count": 1})  # 412 unknown
    call("add_item", f"/user/{USER}/cart/{TEA.sku}", {"count": 1})  # 412 no stock record
    call("add_item", line, b"{")
    call("add_item", line, b" " * (1024 * 1024 + 1))  # 413
    call("add_item", line, {"count": 1}, method="PUT")  # 405
    call("list_cart", cart)
    call("list_cart", "/user/x/cart")
    shop.catalog.down = True
    call("list_cart", cart)  # 503
    call("add_item", line, {"count": 1})  # 503
    shop.catalog.down = False
    shop.orders.reject = True
    call("checkout", f"/checkout/{USER}")  # 412
    shop.orders.reject = False
    shop.orders.down = True
    call("checkout", f"/checkout/{USER}")  # 503
    shop.orders.down = False
    call("checkout", f"/checkout/{USER}", headers={"Idempotency-Key": "c"})
    call("checkout", f"/checkout/{USER}", headers={"Idempotency-Key": "c"})
    call("checkout", f"/checkout/{USER}", method="GET")  # 405
    call("delete_item", line)
    call("delete_item", f"/user/{USER}/cart/0")
    call("clear_cart", cart)
    call("clear_cart", "/user/-1/cart")
