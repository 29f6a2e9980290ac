"""HTTP shapes of the product functions: parse and validate, call the service, shape the response."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from functions.product.domain import Product
from functions.product.service import ProductService
from shared_lib import web


class ListQuery(BaseModel):
    # an unknown query parameter is a typo worth a 400; the validator is built on the first list_products,
    # not at import: get_product's cold start does not use it
    model_config = ConfigDict(extra="forbid", defer_build=True)

    count: int = Field(100, ge=1, le=1000)
    start_after_sku: int = Field(0, ge=0, le=web.INT64_MAX)


def _product(product: Product) -> dict[str, object]:
    return {"sku": product.sku, "name": product.name, "price": product.price}


def authenticate(service: ProductService, headers: Mapping[str, str]) -> None:
    """The key first: a caller without one learns nothing about its query or path (401 before any 400)."""
    service.authenticate(headers.get("X-API-KEY"))


def get_product(service: ProductService, call: web.Call) -> web.Reply:
    product = service.get_product(call.headers.get("X-API-KEY"), call.id("sku"))
    return web.ok(_product(product))


def list_products(service: ProductService, call: web.Call) -> web.Reply:
    api_key = call.headers.get("X-API-KEY")
    query = call.query_model(ListQuery)
    return web.ok([_product(p) for p in service.list_products(api_key, query.start_after_sku, query.count)])
