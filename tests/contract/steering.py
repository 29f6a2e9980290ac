"""What the contract tests know about the shop's data, the seed they run with, and the schema hooks that point
valid (positive) cases at objects that exist.

Random valid data almost never names a SKU in stock, a cart or an order that exists, so the happy paths would
be left to chance. The hooks here are registered on one loaded schema only (`schema.hook`, never globally):
they rewrite three positive cases out of four to use a SKU from the stock the dev server loads, a small
count, one of a few contract users, a low order id, the user and period the CloudEvent tests notify, or the
order they ingest. Negative cases are left exactly as generated.

Reproducing a run: every generated test runs with one seed, SEED unless `--hypothesis-seed=N` is given, so a
run is the same requests in the same order every time (the dev server's data differs only in what other suites
of the same session did before). A failure prints `@reproduce_failure(...)` (print_blob) for its exact case.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.schemas import OpenApiSchema

AnyCase = Case[Any]
ROOT = Path(__file__).resolve().parents[2]

SEED = 20261202  # the contract suite's fixed seed; explore others with --hypothesis-seed=N


def seed(config: pytest.Config) -> int:
    """The seed of this run: hypothesis' own --hypothesis-seed when given, else SEED."""
    given = config.getoption("--hypothesis-seed", default=None)
    return int(given) if given is not None else SEED


def _stock() -> list[dict[str, int]]:
    rows: list[dict[str, int]] = json.loads((ROOT / "functions/loms/data/stock-data.json").read_text())
    return rows


# SKUs the dev server loads with plenty available (every stock SKU is also in product's catalogue): a
# contract run reserves a few hundred units at most
SKUS: tuple[int, ...] = tuple(r["sku"] for r in _stock() if r["total_count"] - r["reserved"] >= 250)
# users of the contract tests only (e2e tests use others): carts and notifications land here
CART_USERS = tuple(range(7_300_001, 7_300_005))
NOTIFIED_USER = 7_300_101  # the user the CloudEvent tests send notifications for
PERIOD = ("2026-01-01T00:00:00Z", "2036-01-01T00:00:00Z")  # holds every moment the CloudEvent tests send
INGESTED_ORDER = "contract-order-1"  # the order_uid the CloudEvent tests ingest
EARLY_ORDERS = 60  # order ids 1..EARLY_ORDERS exist once the session's first tests created orders

skus = st.sampled_from(SKUS)
counts = st.integers(min_value=1, max_value=3)

Users = st.SearchStrategy[int]


def _create_order(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    if isinstance(case.body, dict) and isinstance(case.body.get("items"), list):
        item = st.fixed_dictionaries({"sku": skus, "count": counts})
        items: Any = draw(st.lists(item, min_size=1, max_size=3))
        case.body = {**case.body, "items": items}


def _order_id(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    order_id = draw(st.integers(min_value=1, max_value=EARLY_ORDERS))
    if isinstance(case.body, dict) and "orderId" in case.body:
        case.body = {**case.body, "orderId": order_id}
    elif "orderId" in (case.query or {}):
        case.query = {**case.query, "orderId": order_id}


def _cart_item(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    case.path_parameters = {**case.path_parameters, "user_id": draw(users), "sku": draw(skus)}
    if isinstance(case.body, dict) and "count" in case.body:
        case.body = {**case.body, "count": draw(st.integers(min_value=1, max_value=2))}


def _cart(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    case.path_parameters = {**case.path_parameters, "user_id": draw(users)}


def _sku_query(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    case.query = {**(case.query or {}), "sku": draw(skus)}


def _sku_path(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    case.path_parameters = {**case.path_parameters, "sku": draw(skus)}


def _notifications(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    case.query = {**(case.query or {}), "user_id": NOTIFIED_USER, "from": PERIOD[0], "to": PERIOD[1]}


def _order(case: AnyCase, draw: st.DrawFn, users: Users) -> None:
    case.path_parameters = {**case.path_parameters, "order_uid": INGESTED_ORDER}


STEERS: dict[str, Callable[[AnyCase, st.DrawFn, Users], None]] = {
    "POST /order/create": _create_order,
    "GET /order/info": _order_id,
    "POST /order/pay": _order_id,
    "POST /order/cancel": _order_id,
    "GET /stock/info": _sku_query,
    "POST /user/{user_id}/cart/{sku}": _cart_item,
    "DELETE /user/{user_id}/cart/{sku}": _cart_item,
    "GET /user/{user_id}/cart": _cart,
    "DELETE /user/{user_id}/cart": _cart,
    "POST /checkout/{user_id}": _cart,
    "GET /product/{sku}": _sku_path,
    "GET /notifications": _notifications,
    "GET /order/{order_uid}": _order,
}


def steer(schema: OpenApiSchema, cart_users: tuple[int, ...] = CART_USERS) -> OpenApiSchema:
    """Register the steering hook on this schema only (carts of `cart_users`); returns the schema."""
    users = st.sampled_from(cart_users)

    @schema.hook
    def flatmap_case(context: HookContext, case: AnyCase) -> st.SearchStrategy[AnyCase]:
        operation = context.operation
        rewrite = STEERS.get(operation.label) if operation is not None else None
        meta = case.meta
        if rewrite is None or meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
            return st.just(case)

        @st.composite
        def steered(draw: st.DrawFn) -> AnyCase:
            # False is the simplest choice, so a failure shrinks towards the case as generated
            if draw(st.sampled_from((False, True, True, True))):
                rewrite(case, draw, users)
            return case

        return steered()

    return schema
