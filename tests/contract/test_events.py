"""The cluster-internal ways in against the dev server: the CloudEvent function `notify_status`, the topic
`orders` (consumed by the ingest worker) and the cron functions (`relay_outbox`, `cancel_stale_orders`), in
no public document.

Their answers are documented in the README and in loms' openapi.yaml: a CloudEvent function acknowledges (200)
what it handled, a redelivery and a poison event alike (a 500 would make the source retry), and its effect is
read back through the public functions, whose answers must conform to their documents; an order published to
`orders` is stored once and read back the same way; a cron function answers 200 with its counts. The events
are binary-mode CloudEvents as KafkaSource and loms' relay send them, encoded by the CloudEvents SDK. Every
value is fixed, so a run is the same requests every time and a repeat on a kept server (TEST_PG_DSN) is a
redelivery.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from kafka import KafkaProducer
from schemathesis.core.transport import Response

from functions.devtools import orders_generator as generator
from tests.contract import steering
from tests.http_client import fetch
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# beyond any outbox row id loms will give (`/loms` events share one id space: a clash would be a duplicate)
EVENT_IDS = 9_000_000_000_000_000_000
ORDER_ID = EVENT_IDS + 1  # no loms order has it: the notifier takes an event's word for its order


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def deliver(url: str, attributes: dict[str, str], data: Any) -> int:
    """POST one binary-mode CloudEvent (JSON data); the answer's status."""
    headers, body = to_binary(CloudEvent({**attributes, "datacontenttype": "application/json"}, data))
    return post(url, headers, body)[0]


def documented(shop: dict[str, str], service: str, path: str, **parts: Any) -> Response:
    """GET a public function with these parts and check the answer against the service's document
    (schemathesis' checks: status, content type, headers, body schema)."""
    schema = schemathesis.openapi.from_path(ROOT / "functions" / service / "openapi.yaml")
    case = schema[path]["GET"].Case(**parts)
    return case.call_and_validate(base_url=shop[service])


# --- notify_status ----------------------------------------------------------------------------------------


def status_change(event_id: int, status: str, moment: str) -> tuple[dict[str, str], dict[str, Any]]:
    attributes = {"id": str(event_id), "source": "/loms", "type": "loms.order.status-changed", "time": moment}
    data = {"order_id": ORDER_ID, "user_id": steering.NOTIFIED_USER, "status": status, "moment": moment}
    return attributes, data


def notifications(shop: dict[str, str]) -> list[dict[str, Any]]:
    start, end = steering.PERIOD
    response = documented(
        shop,
        "notifier",
        "/notifications",
        query={"user_id": steering.NOTIFIED_USER, "from": start, "to": end},
    )
    history = response.json()
    assert history["user_id"] == str(steering.NOTIFIED_USER)
    return [item for item in history["items"] if item["order_id"] == str(ORDER_ID)]


def test_notify_status_records_a_status_change_once(shop: dict[str, str]) -> None:
    url = f"{shop['notifier']}/events/notify_status"
    attributes, data = status_change(EVENT_IDS + 1, "awaiting payment", "2026-11-22T08:00:00Z")
    assert deliver(url, attributes, data) == 200
    assert deliver(url, attributes, data) == 200  # a redelivery: acknowledged, changes nothing
    paid_attributes, paid = status_change(EVENT_IDS + 2, "paid", "2026-11-22T08:05:00Z")
    assert deliver(url, paid_attributes, paid) == 200

    found = notifications(shop)
    assert [(n["status"], n["created_at"]) for n in found] == [
        ("awaiting payment", "2026-11-22T08:00:00Z"),
        ("paid", "2026-11-22T08:05:00Z"),
    ]
    assert all(str(ORDER_ID) in n["message"] for n in found), found


def test_notify_status_acknowledges_a_poison_event_and_records_nothing(shop: dict[str, str]) -> None:
    url = f"{shop['notifier']}/events/notify_status"
    before = notifications(shop)
    attributes, data = status_change(EVENT_IDS + 3, "shipped", "2026-11-22T09:00:00Z")  # no such status
    assert deliver(url, attributes, data) == 200  # poison: acknowledged (logged, counted), never retried
    attributes, _ = status_change(EVENT_IDS + 4, "paid", "2026-11-22T09:00:00Z")
    assert deliver(url, attributes, {"order_id": "not an id"}) == 200
    assert notifications(shop) == before


# --- orders, through the topic the ingest worker consumes --------------------------------------------------

# made the same every run: a fixed generator seed and a fixed clock
ORDER = generator.make_order(
    random.Random(steering.SEED), uid=steering.INGESTED_ORDER, now=datetime(2026, 11, 1, tzinfo=UTC)
)
# published after the records a test checks, under the same key (so the same partition): once it is served,
# the worker has handled everything before it
MARKER = generator.make_order(
    random.Random(steering.SEED + 1), uid="contract-order-2", now=datetime(2026, 11, 1, tzinfo=UTC)
)


def stored_order(shop: dict[str, str]) -> Response:
    return documented(shop, "orders", "/order/{order_uid}", path_parameters={"order_uid": ORDER["order_uid"]})


def publish(kafka_bootstrap: str, orders: list[Any]) -> None:
    """Produce these orders to `orders` in this order, all under ORDER's key, as the shop's producers do."""
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for order in orders:
            producer.send("orders", key=ORDER["order_uid"].encode(), value=generator.encode(order)).get(30)
    finally:
        producer.close(5)


def served(shop: dict[str, str], uid: str) -> bool:
    return fetch(f"{shop['orders']}/order/{uid}")[0] == 200


def test_an_order_published_to_orders_is_stored_once_in_its_shape(
    shop: dict[str, str], kafka_bootstrap: str
) -> None:
    publish(kafka_bootstrap, [ORDER, ORDER])  # the second: a redelivery, changes nothing
    wait_for(lambda: served(shop, ORDER["order_uid"]), timeout=60)

    response = stored_order(shop)
    assert response.json() == ORDER
    assert list(response.json()) == list(ORDER)  # the sample's key order


def test_a_conflict_and_an_invalid_record_on_orders_are_refused_and_the_order_kept(
    shop: dict[str, str], kafka_bootstrap: str
) -> None:
    conflict = {**ORDER, "entry": "CONFLICT"}  # another body under a stored order_uid: dead-lettered
    invalid = {**ORDER, "order_uid": "contract-invalid-1", "items": []}  # at least one item is required
    publish(kafka_bootstrap, [ORDER, conflict, invalid, MARKER])
    wait_for(lambda: served(shop, MARKER["order_uid"]), timeout=60)

    response = stored_order(shop)
    assert response.json() == ORDER
    status, _ = fetch(f"{shop['orders']}/order/contract-invalid-1")
    assert status == 404


# --- the cron functions -----------------------------------------------------------------------------------

CRON_ANSWERS = {
    "/internal/relay-outbox": {"published"},
    "/internal/cancel-stale-orders": {"cancelled", "orphans_released", "busy_shards", "events_pruned"},
}


@pytest.mark.parametrize("path", list(CRON_ANSWERS))
def test_a_cron_function_answers_its_counts(shop: dict[str, str], path: str) -> None:
    # a PingSource POSTs its (empty) JSON payload; the dev server's own cron calls them every 2 s meanwhile
    status, body = post(f"{shop['loms']}{path}", {"Content-Type": "application/json"}, b"{}")
    assert status == 200, body
    answer = json.loads(body)
    assert set(answer) == CRON_ANSWERS[path], answer
    assert all(type(count) is int and count >= 0 for count in answer.values()), answer


@pytest.mark.parametrize("path", list(CRON_ANSWERS))
def test_a_cron_function_refuses_another_method_with_a_json_error(shop: dict[str, str], path: str) -> None:
    status, body = fetch(f"{shop['loms']}{path}")
    assert status == 405
    error = json.loads(body)
    assert (error["code"], error["details"]) == (3, [])
