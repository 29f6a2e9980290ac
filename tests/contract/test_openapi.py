"""Every service's openapi.yaml against its real handlers, served by the dev server (schemathesis).

Each generated request (valid and invalid) must get a response the document describes: status, content
type and body schema, and never a 5xx.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.e2e

EXAMPLES = 30


def _schema(base_url: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    schema.config.base_url = base_url  # type: ignore[attr-defined]
    return schema


@pytest.fixture(scope="session")
def product_schema(shop: dict[str, str]) -> Any:
    return _schema(shop["product"])


@pytest.fixture(scope="session")
def cart_schema(shop: dict[str, str]) -> Any:
    return _schema(shop["cart"])


@pytest.fixture(scope="session")
def loms_schema(shop: dict[str, str]) -> Any:
    return _schema(shop["loms"])


product = schemathesis.pytest.from_fixture("product_schema")
cart = schemathesis.pytest.from_fixture("cart_schema")
loms = schemathesis.pytest.from_fixture("loms_schema")

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@product.parametrize()
@SETTINGS
def test_product_conforms(case: schemathesis.Case, shop: dict[str, str]) -> None:
    case.call_and_validate(base_url=shop["product"], headers={"X-API-KEY": "testToken"})


@cart.parametrize()
@SETTINGS
def test_cart_conforms(case: schemathesis.Case, shop: dict[str, str]) -> None:
    case.call_and_validate(base_url=shop["cart"])


@loms.parametrize()
@SETTINGS
def test_loms_conforms(case: schemathesis.Case, shop: dict[str, str]) -> None:
    case.call_and_validate(base_url=shop["loms"])
