"""The product service and its handlers, on the real catalogue built from the shipped data files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import flask
import functions_framework
import pytest
from flask.testing import FlaskClient

from functions.product import bootstrap
from functions.product.adapters.catalogue import GENERATED_BASE_SKU, GeneratedCatalogue
from functions.product.adapters.pacing import SleepLatency, TokenBucket
from functions.product.domain import InvalidApiKeyError, ProductRateExceededError, UnknownProductError
from functions.product.service import ProductService
from functions.product.settings import ProductSettings

FUNCTIONS = Path(__file__).resolve().parents[3] / "functions"
KEY = {"X-API-KEY": "testToken"}


def make_service(rate: float = 0, burst: int = 10, generated: int = 100) -> ProductService:
    return ProductService(
        catalogue=GeneratedCatalogue.from_data(generated),
        api_keys=frozenset({"testToken"}),
        limiter=TokenBucket(rate, burst),
        latency=SleepLatency(0, 0),
    )


def test_catalogue_holds_every_known_product_exactly() -> None:
    known = json.loads((FUNCTIONS / "product" / "data" / "known-products.json").read_text(encoding="utf-8"))
    known = known["products"]
    assert len(known) > 0
    catalogue = GeneratedCatalogue.from_data(0)
    for entry in known:
        product = catalogue.get(entry["sku"])
        assert product is not None
        assert (product.name, product.price) == (entry["name"], entry["price"])


def test_catalogue_holds_every_sku_loms_stocks() -> None:
    """loms ships its own copy of the stock file: every SKU it can reserve is one product can describe."""
    stock = json.loads((FUNCTIONS / "loms" / "data" / "stock-data.json").read_text(encoding="utf-8"))
    assert len(stock) > 0
    catalogue = GeneratedCatalogue.from_data(0)
    assert all(catalogue.get(row["sku"]) is not None for row in stock)


def test_generated_products_are_deterministic_and_bounded() -> None:
    a, b = GeneratedCatalogue.from_data(1_000_000), GeneratedCatalogue.from_data(1_000_000)
    assert a.get(GENERATED_BASE_SKU + 1_000_000) == b.get(GENERATED_BASE_SKU + 1_000_000)
    assert a.get(GENERATED_BASE_SKU + 1_000_001) is None
    assert GeneratedCatalogue.from_data(5).get(GENERATED_BASE_SKU + 6) is None


def test_pages_walk_the_whole_catalogue_in_order() -> None:
    catalogue = GeneratedCatalogue.from_data(250)
    seen: list[int] = []
    after = 0
    while page := catalogue.page(after, 37):
        seen.extend(p.sku for p in page)
        after = page[-1].sku
    assert seen == sorted(set(seen))
    assert len(seen) == len(catalogue.fixed) + 250


def test_wrong_key_is_refused_before_anything_else() -> None:
    service = make_service()
    with pytest.raises(InvalidApiKeyError):
        service.get_product("nope", 1076963)
    with pytest.raises(InvalidApiKeyError):
        service.get_product(None, 1076963)


def test_unknown_sku() -> None:
    with pytest.raises(UnknownProductError):
        make_service().get_product("testToken", 1)


def test_rate_limit_refuses_past_the_burst() -> None:
    service = make_service(rate=1, burst=3)
    for _ in range(3):
        service.get_product("testToken", 1076963)
    with pytest.raises(ProductRateExceededError):
        service.get_product("testToken", 1076963)


@pytest.fixture
def client() -> Iterator[Callable[[str], FlaskClient]]:
    def build(target: str) -> FlaskClient:
        app: flask.Flask = functions_framework.create_app(target=target, source="functions/product/main.py")
        return app.test_client()

    bootstrap.bootstrap(
        ProductSettings(api_keys="testToken"),
        catalogue=GeneratedCatalogue.from_data(100),
        limiter=TokenBucket(0, 10),
        latency=SleepLatency(0, 0),
    )
    yield build
    bootstrap.reset()


@pytest.mark.function("get_product")
def test_get_product_handler(client) -> None:  # type: ignore[no-untyped-def]
    app = client("get_product")
    response = app.get("/product/1076963", headers=KEY)
    assert response.status_code == 200
    assert response.json == {"sku": 1076963, "name": "Теория нравственных чувств | Смит Адам", "price": 3379}
    assert app.get("/product/1076963").json["code"] == 16
    assert app.get("/product/1", headers=KEY).status_code == 404
    for bad in ("abc", "0", "-5", "9223372036854775808", "1.5"):
        response = app.get(f"/product/{bad}", headers=KEY)
        assert response.status_code == 400, bad
        assert response.json["code"] == 3
    assert app.get("/products/1", headers=KEY).status_code == 404
    response = app.post("/product/1076963", headers=KEY)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


@pytest.mark.function("list_products")
def test_list_products_handler(client) -> None:  # type: ignore[no-untyped-def]
    app = client("list_products")
    page = app.get("/product?count=3&start_after_sku=0", headers=KEY).json
    assert [p["sku"] for p in page] == sorted(p["sku"] for p in page)
    assert len(page) == 3
    for query in ("count=0", "count=1001", "count=x", "start_after_sku=-1"):
        response = app.get(f"/product?{query}", headers=KEY)
        assert response.status_code == 400, query
    assert app.get("/product").status_code == 401


def test_settings_read_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_API_KEYS", "a, b")
    monkeypatch.setenv("PRODUCT_GENERATED_COUNT", "1000000")
    service = bootstrap.Root().product_service
    assert service.api_keys == frozenset({"a", "b"})
    assert service.catalogue.get(GENERATED_BASE_SKU + 1_000_000) is not None


@pytest.mark.function("list_products")
def test_the_key_is_checked_before_the_query(client) -> None:  # type: ignore[no-untyped-def]
    app = client("list_products")
    for query in ("count=0", "count=x", "start_after_sku=-1", "count=1&count=2", "typo=1"):
        for headers in ({}, {"X-API-KEY": "wrong"}):
            response = app.get(f"/product?{query}", headers=headers)
            assert response.status_code == 401, (query, headers)
            assert response.json["code"] == 16


@pytest.mark.function("get_product")
def test_the_key_is_checked_before_the_sku(client) -> None:  # type: ignore[no-untyped-def]
    app = client("get_product")
    for bad in ("0", "abc", "9223372036854775808"):
        response = app.get(f"/product/{bad}")
        assert response.status_code == 401, bad
        assert response.json["code"] == 16
    assert app.get("/products/1").status_code == 404  # no such route: nothing to authenticate for


def test_a_refused_key_takes_nothing_from_the_rate() -> None:
    service = make_service(rate=0, burst=1)
    with pytest.raises(InvalidApiKeyError):
        service.authenticate("wrong")
    service.authenticate("testToken")  # the key alone: no token of the bucket taken
    assert service.get_product("testToken", 1076963).sku == 1076963
