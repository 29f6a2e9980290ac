"""The strict model of an order: the sample passes, each kind of invalid record is refused with its reason."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from functions.devtools import orders_generator as generator
from functions.orders.consumer import OrderModel, parse
from functions.orders.domain import Order, sum_problems
from tests.unit.orders.fakes import NOW, SAMPLE_BYTES, record, sample

pytestmark = pytest.mark.function("ingest_worker")
SKEW = timedelta(minutes=5)


def problem(value: Any) -> str:
    submission = parse(record(value), NOW, SKEW)
    assert submission.order is None, "accepted"
    return submission.problem


def test_the_sample_is_valid_and_round_trips_exactly() -> None:
    submission = parse(record(SAMPLE_BYTES), NOW, SKEW)
    assert submission.order is not None and submission.problem == ""
    assert json.dumps(submission.order.to_json()) == json.dumps(json.loads(SAMPLE_BYTES))
    assert sum_problems(submission.order) == []


def test_strings_are_trimmed_and_the_fingerprint_ignores_the_whitespace() -> None:
    padded = sample(order_uid="  b563feb7b2b84b6test ", entry=" WBIL")
    padded["delivery"]["city"] = " Kiryat Mozkin\t"
    order = parse(record(padded), NOW, SKEW).order
    plain = parse(record(SAMPLE_BYTES), NOW, SKEW).order
    assert order is not None and plain is not None
    assert order.delivery.city == "Kiryat Mozkin" and order.order_uid == "b563feb7b2b84b6test"
    assert order.fingerprint == plain.fingerprint


def test_an_offset_date_is_stored_in_utc() -> None:
    order = parse(record(sample(date_created="2021-11-26T09:22:19+03:00")), NOW, SKEW).order
    assert order is not None and order.to_json()["date_created"] == "2021-11-26T06:22:19Z"


def payment(**changes: Any) -> dict[str, Any]:
    p: dict[str, Any] = sample()["payment"]
    p.update(changes)
    return p


def delivery(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = sample()["delivery"]
    d.update(changes)
    return d


def item(**changes: Any) -> list[dict[str, Any]]:
    i = sample()["items"][0]
    i.update(changes)
    return [i]


def without(name: str) -> dict[str, Any]:
    order = sample()
    del order[name]
    return order


INVALID: dict[str, tuple[Any, str]] = {
    "not JSON": (b'{"order_uid": "x",', "not JSON"),
    "not UTF-8": (b"\xff\xfe{}", "not JSON"),
    "empty": (b"", "not JSON"),
    "not an object": (b"[1, 2]", "valid dictionary"),
    "amount as text": (sample(payment=payment(amount="1817")), "payment.amount"),
    "amount as float": (sample(payment=payment(amount=1817.0)), "payment.amount"),
    "sm_id as bool": (sample(sm_id=True), "sm_id"),
    "uid as number": (sample(order_uid=42), "order_uid"),
    "missing payment": (without("payment"), "payment: Field required"),
    "missing date": (without("date_created"), "date_created: Field required"),
    "unknown field": (sample(discount="x"), "discount: Extra inputs"),
    "future date": (sample(date_created="2026-11-23T12:10:00Z"), "in the future"),
    "date without offset": (sample(date_created="2021-11-26T06:22:19"), "RFC 3339"),
    "date not a date": (sample(date_created="2021-02-30T06:22:19Z"), "not a valid date-time"),
    "bad email": (sample(delivery=delivery(email="test.gmail.com")), "email"),
    "bad phone": (sample(delivery=delivery(phone="12-34")), "phone"),
    "letters in phone": (sample(delivery=delivery(phone="+972abc0000")), "phone"),
    "unknown currency": (sample(payment=payment(currency="ABC")), "ISO 4217"),
    "lower-case currency": (sample(payment=payment(currency="usd")), "ISO 4217"),
    "negative cost": (sample(payment=payment(delivery_cost=-1)), "delivery_cost"),
    "negative price": (sample(items=item(price=-453)), "items.0.price"),
    "over int64": (sample(payment=payment(payment_dt=2**63)), "payment_dt"),
    "sale over 100": (sample(items=item(sale=101)), "sale"),
    "no items": (sample(items=[]), "items"),
    "item of another track": (sample(items=item(track_number="OTHER")), "track_number"),
    "empty transaction": (sample(payment=payment(transaction="   ")), "payment.transaction"),
    "bad uid": (sample(order_uid="a b"), "order_uid"),
    "amount mismatch": (sample(payment=payment(amount=1818)), "amount is not goods_total"),
    "goods mismatch": (
        sample(payment=payment(goods_total=318, amount=1818)),
        "goods_total is not the sum",
    ),
}


@pytest.mark.parametrize(("value", "reason"), list(INVALID.values()), ids=list(INVALID))
def test_each_invalid_kind_is_refused_with_its_reason(value: Any, reason: str) -> None:
    refused = problem(value)
    assert refused.startswith("invalid: ")
    assert reason in refused


def test_a_date_within_the_skew_is_accepted() -> None:
    assert parse(record(sample(date_created="2026-11-23T12:04:00Z")), NOW, SKEW).order is not None


@pytest.mark.parametrize("kind", generator.INVALID_KINDS)
def test_every_kind_the_generator_makes_is_refused(kind: str) -> None:
    import random

    _, value = generator.invalid(kind, random.Random(kind), NOW)
    assert problem(value)


def test_the_generator_valid_orders_are_valid() -> None:
    import random

    rng = random.Random(1)
    for _ in range(200):
        assert parse(record(generator.make_order(rng, now=NOW)), NOW, SKEW).order is not None


def test_a_validated_model_maps_to_the_order_its_dump_describes() -> None:
    model = OrderModel.model_validate_json(SAMPLE_BYTES)  # parse's way: its fields read, no dump in between
    assert Order.from_attributes(model) == Order.from_json(model.model_dump())


def test_the_json_shape_maps_back_to_the_same_order() -> None:
    order = parse(record(SAMPLE_BYTES), NOW, SKEW).order
    assert order is not None
    assert Order.from_json(order.to_json()) == order
    assert Order.from_json({**order.to_json(), "date_created": order.date_created}) == order  # a row's value
