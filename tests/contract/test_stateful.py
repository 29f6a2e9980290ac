"""Stateful contract tests: schemathesis follows the documents' OpenAPI links, so valid requests reach objects
that exist, and a model of what the requests did checks every answer about them.

loms: create → info → pay → cancel (and cancel after pay, pay after cancel: both refused with code 9).
cart: add → list → checkout (and delete), each checkout's order read back from loms.

Every response must also conform to its document (schemathesis' checks, as in test_openapi.py). A run is the
same requests every time (the suite's seed, see tests/contract/README.md), and the test fails unless the
happy paths were reached: a scenario run that only ever met 404s and 400s proves nothing.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import seed as with_seed
from schemathesis import Case, GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.transport import Response
from schemathesis.generation.stateful.state_machine import APIStateMachine

from tests.contract import steering
from tests.http_client import fetch

pytestmark = pytest.mark.e2e

AnyCase = Case[Any]

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = 15
STEPS = 8
SETTINGS = settings(
    max_examples=SCENARIOS,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    print_blob=True,
)
# carts of this test only: each scenario starts with them empty
USERS = (7_300_011, 7_300_012, 7_300_013)

CREATE, INFO, PAY, CANCEL = "POST /order/create", "GET /order/info", "POST /order/pay", "POST /order/cancel"
ADD, DELETE, LIST, CHECKOUT = (
    "POST /user/{user_id}/cart/{sku}",
    "DELETE /user/{user_id}/cart/{sku}",
    "GET /user/{user_id}/cart",
    "POST /checkout/{user_id}",
)


def _int(value: Any) -> int | None:
    """An id as the API reads it (a JSON number or decimal text), or None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _body(case: AnyCase) -> dict[str, Any]:
    return case.body if isinstance(case.body, dict) else {}


def _body_id(case: AnyCase, name: str) -> int | None:
    return _int(_body(case).get(name))


class Tally:
    """What a whole run reached: (operation, status) answers and the model's checks, by name."""

    def __init__(self) -> None:
        self.answers: Counter[tuple[str, int]] = Counter()
        self.checks: Counter[str] = Counter()


def workflow(
    service: str, shop: dict[str, str], tally: Tally, model: type[Model], seed: int
) -> type[APIStateMachine]:
    """The schema's state machine, sending to the dev server and checking every answer against `model`."""
    schema = steering.steer(
        schemathesis.openapi.from_path(ROOT / "functions" / service / "openapi.yaml"), cart_users=USERS
    )
    base: Any = schema.as_state_machine()

    class Workflow(base):  # type: ignore[misc]
        def setup(self) -> None:
            self.model = model(tally, shop)

        def get_call_kwargs(self, case: AnyCase) -> dict[str, Any]:
            return {"base_url": shop[service]}

        def before_call(self, case: AnyCase) -> None:
            # a generated key may repeat an earlier one (hypothesis likes "0"), and a repeat replays the
            # first answer: the model would count it twice. Idempotency is test_openapi's and the unit tests'.
            if "Idempotency-Key" in case.headers:
                case.headers["Idempotency-Key"] = uuid.uuid4().hex

        def after_call(self, response: Response, case: AnyCase) -> None:
            super().after_call(response, case)
            tally.answers[(case.operation.label, response.status_code)] += 1
            self.model.observe(case, response)

        def validate_response(
            self, response: Response, case: AnyCase, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            # business rules may refuse a valid request (pay a cancelled order): every other check applies
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=[positive_data_acceptance],
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    return with_seed(seed)(Workflow)


class Model:
    """What one scenario did, and the checks of each answer against it.

    Every success changes the model; only valid (positive) cases are held to what the model expects: an
    invalid one is refused for its own reason (and accepting it fails schemathesis' negative_data_rejection).
    """

    def __init__(self, tally: Tally, shop: dict[str, str]) -> None:
        self.tally = tally
        self.shop = shop
        self.strict = True

    def observe(self, case: AnyCase, response: Response) -> None:
        meta = case.meta
        self.strict = meta is None or meta.generation.mode is GenerationMode.POSITIVE
        self.answer(case, response)

    def answer(self, case: AnyCase, response: Response) -> None:
        raise NotImplementedError

    def check(self, name: str, condition: bool, message: str) -> None:
        if self.strict:
            assert condition, message
            self.tally.checks[name] += 1


class Orders(Model):
    """loms: each order this scenario created, with its user, items and status."""

    def __init__(self, tally: Tally, shop: dict[str, str]) -> None:
        super().__init__(tally, shop)
        self.orders: dict[int, dict[str, Any]] = {}

    def answer(self, case: AnyCase, response: Response) -> None:
        label, status = case.operation.label, response.status_code
        if label == CREATE and status == 200:
            body = _body(case)
            items: Counter[int] = Counter()
            for item in body["items"]:
                items[int(item["sku"])] += int(item["count"])
            order_id = int(response.json()["orderId"])
            self.orders[order_id] = {
                "status": "awaiting payment",
                "userId": str(int(body["userId"])),
                "items": [{"sku": str(sku), "count": count} for sku, count in sorted(items.items())],
            }
            return
        known = _int(case.query.get("orderId")) if label == INFO else _body_id(case, "orderId")
        order = self.orders.get(known) if known is not None else None
        if order is None:
            return
        if label == INFO:
            self.check("info of an order made here", status == 200, f"{known}: {status}")
            if status == 200:
                found = response.json()
                self.check("its status, user and items", found == order, f"{found} != {order}")
        elif label in (PAY, CANCEL):
            action, then, refused_in = (
                ("pay", "paid", "cancelled") if label == PAY else ("cancel", "cancelled", "paid")
            )
            if order["status"] == refused_in:
                self.check(f"{action} a {refused_in} order is refused", status == 400, f"{order}: {status}")
                if status == 400:
                    self.check("with code 9", response.json()["code"] == 9, response.text)
            else:
                self.check(f"{action} an order {order['status']}", status == 200, f"{order}: {status}")
            if status == 200:
                order["status"] = then


class Carts(Model):
    """cart: the carts of USERS (emptied before each scenario), and the loms orders their checkouts made."""

    def __init__(self, tally: Tally, shop: dict[str, str]) -> None:
        super().__init__(tally, shop)
        for user in USERS:
            assert fetch(f"{shop['cart']}/user/{user}/cart", method="DELETE")[0] == 204
        self.carts: dict[int, Counter[int]] = {user: Counter() for user in USERS}

    def answer(self, case: AnyCase, response: Response) -> None:
        label, status = case.operation.label, response.status_code
        user = _int(case.path_parameters.get("user_id"))
        if user not in self.carts or status >= 500:
            return
        cart = self.carts[user]
        if label == ADD and status == 200:
            cart[int(case.path_parameters["sku"])] += int(_body(case)["count"])
        elif label == DELETE and status == 204:
            cart.pop(int(case.path_parameters["sku"]), None)
        elif label == LIST:
            if not cart:
                self.check("an empty cart is not found", status == 404, f"{user}: {status}")
                return
            self.check("list a cart made here", status == 200, f"{user}: {status} {response.text}")
            if status != 200:
                return
            listed = response.json()
            counts = {item["sku"]: item["count"] for item in listed["items"]}
            self.check("its items", counts == dict(cart), f"{counts} != {dict(cart)}")
            total = sum(item["price"] * item["count"] for item in listed["items"])
            self.check("its total", listed["total_price"] == total, f"{listed}")
        elif label == CHECKOUT:
            if not cart:
                self.check("an empty cart checks nothing out", status == 404, f"{user}: {status}")
                return
            if status == 412:  # loms could not reserve: the cart stays
                return
            self.check("check out a cart made here", status == 200, f"{user}: {status} {response.text}")
            if status != 200:
                return
            order_id = response.json()["order_id"]
            code, body = fetch(f"{self.shop['loms']}/order/info?orderId={order_id}")
            expected = {
                "status": "awaiting payment",
                "userId": str(user),
                "items": [{"sku": str(sku), "count": count} for sku, count in sorted(cart.items())],
            }
            found = (code, json.loads(body))
            self.check("the checkout's order in loms", found == (200, expected), f"{body!r}")
            cart.clear()


@pytest.mark.parametrize(
    ("service", "model", "happy"),
    [
        pytest.param(
            "loms",
            Orders,
            {(CREATE, 200), (INFO, 200), (PAY, 200), (CANCEL, 200), (PAY, 400), (CANCEL, 400)},
            id="loms",
        ),
        pytest.param("cart", Carts, {(ADD, 200), (LIST, 200), (DELETE, 204), (CHECKOUT, 200)}, id="cart"),
    ],
)
def test_linked_operations_reach_existing_objects(
    shop: dict[str, str],
    service: str,
    model: type[Model],
    happy: set[tuple[str, int]],
    request: pytest.FixtureRequest,
) -> None:
    tally = Tally()
    workflow(service, shop, tally, model, steering.seed(request.config)).run(settings=SETTINGS)

    reached = set(tally.answers)
    assert happy <= reached, f"happy paths never reached: {happy - reached}; answers: {dict(tally.answers)}"
    assert tally.checks, "the model checked nothing"
    print(f"{service}: answers {dict(tally.answers)}; model checks {dict(tally.checks)}")
