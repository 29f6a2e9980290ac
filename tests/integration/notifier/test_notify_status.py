"""notify_status through the real functions-framework app on real PostgreSQL, delivering to a real local
webhook: redeliveries, duplicates, shuffles, concurrent duplicates, poison, and outages.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import functions_framework
import pytest

from functions.notifier import bootstrap
from shared_lib.devtools.ports import free_port
from shared_lib.postgres import ConnectionPool
from tests.integration.notifier.conftest import MAIN, Apps, Webhook
from tests.unit.notifier.fakes import cloud_event, order_events
from tests.unit.notifier.test_service import interleave, three_times

pytestmark = [pytest.mark.integration, pytest.mark.function("notify_status")]


def post(client: Any, event: Any, **overrides: Any) -> int:
    headers, body = cloud_event(event, **overrides)
    return int(client.post("/", headers=headers, data=body).status_code)


def outcomes(pool: ConnectionPool, order_ids: list[int]) -> dict[int, str]:
    rows = pool.run(
        "SELECT event_id, outcome FROM processed_events WHERE order_id = ANY(CAST(:o AS bigint[]))",
        o=order_ids,
    )
    return {int(event_id): outcome for event_id, outcome in rows}


def notified(pool: ConnectionPool, order_ids: list[int]) -> list[int]:
    rows = pool.run(
        "SELECT event_id FROM notifications WHERE order_id = ANY(CAST(:o AS bigint[])) ORDER BY event_id",
        o=order_ids,
    )
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("seed", range(3))
def test_every_event_three_times_shuffled_across_orders_is_notified_once_in_order(
    notifier_apps: Apps,
    webhook: Webhook,
    notifier_pool: ConnectionPool,
    unique_id: Callable[[], int],
    seed: int,
) -> None:
    client = notifier_apps(NOTIFIER_SINK="webhook", NOTIFIER_WEBHOOK_URL=webhook.url)["notify_status"]
    rng = random.Random(seed)
    user = unique_id()
    orders = {
        order_id: order_events(unique_id() * 10, order_id, user)
        for order_id in (unique_id() for _ in range(6))
    }
    for event in interleave([three_times(events, rng) for events in orders.values()], rng):
        assert post(client, event) == 200

    every = [e.event.id for events in orders.values() for e in events]
    assert notified(notifier_pool, list(orders)) == sorted(every)
    for order_id, events in orders.items():
        assert webhook.events(order_id) == [e.event.id for e in events]  # once each, in order
    assert len(webhook.received) == len(every)
    assert all(h["Idempotency-Key"] == body["event_id"] for h, body in webhook.received)
    counters = bootstrap.counters()
    assert (counters.value("notified"), counters.value("duplicate")) == (len(every), 2 * len(every))


def test_an_older_event_is_recorded_out_of_order_and_not_delivered(
    notifier_apps: Apps, webhook: Webhook, notifier_pool: ConnectionPool, unique_id: Callable[[], int]
) -> None:
    client = notifier_apps(NOTIFIER_SINK="webhook", NOTIFIER_WEBHOOK_URL=webhook.url)["notify_status"]
    order = unique_id()
    new, awaiting, paid = order_events(unique_id() * 10, order)
    for event in (new, paid, awaiting, awaiting):
        assert post(client, event) == 200
    assert webhook.events(order) == [new.event.id, paid.event.id]
    assert outcomes(notifier_pool, [order]) == {
        new.event.id: "notified",
        awaiting.event.id: "out_of_order",
        paid.event.id: "notified",
    }
    assert bootstrap.counters().value("out_of_order") == 1


def test_concurrent_duplicate_deliveries_make_one_notification_and_one_delivery(
    notifier_apps: Apps, webhook: Webhook, notifier_pool: ConnectionPool, unique_id: Callable[[], int]
) -> None:
    notifier_apps(NOTIFIER_SINK="webhook", NOTIFIER_WEBHOOK_URL=webhook.url)
    order = unique_id()
    event = order_events(unique_id() * 10, order, statuses=("new",))[0]
    barrier = threading.Barrier(12)
    statuses: list[int] = []

    def deliver() -> None:
        client = functions_framework.create_app(target="notify_status", source=MAIN).test_client()
        barrier.wait()
        statuses.append(post(client, event))

    threads = [threading.Thread(target=deliver) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 12
    assert notified(notifier_pool, [order]) == [event.event.id]
    assert webhook.events(order) == [event.event.id]


@pytest.mark.parametrize(
    "overrides", [{"status": "shipped"}, {"order_id": "x"}, {"moment": None}], ids=["status", "id", "moment"]
)
def test_a_poison_payload_is_acknowledged_counted_and_stores_nothing(
    notifier_apps: Apps,
    notifier_pool: ConnectionPool,
    unique_id: Callable[[], int],
    overrides: dict[str, Any],
) -> None:
    client = notifier_apps()["notify_status"]
    order = unique_id()
    event = order_events(unique_id() * 10, order, statuses=("new",))[0]
    assert post(client, event, **overrides) == 200
    headers, _ = cloud_event(event)
    assert client.post("/", headers=headers, data=b"\x00not json").status_code == 200
    # data the SDK cannot decode: refused with 400 (never a 200), for the event source to dead-letter
    assert client.post("/", headers=headers, data=b"9" * 5000).status_code == 400
    assert bootstrap.counters().value("poison") == 3
    assert outcomes(notifier_pool, [order]) == {}


def test_the_database_down_makes_the_handler_fail_so_the_source_retries(
    notifier_apps: Apps, notifier_dsn: str, notifier_pool: ConnectionPool, unique_id: Callable[[], int]
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/notifier"
    client = notifier_apps(NOTIFIER_DATABASE_URL=down)["notify_status"]
    order = unique_id()
    event = order_events(unique_id() * 10, order, statuses=("new",))[0]
    assert post(client, event) == 500  # functions-framework's answer to the TransientError
    client = notifier_apps(NOTIFIER_DATABASE_URL=notifier_dsn)["notify_status"]
    assert post(client, event) == 200  # the redelivery, once the database is back
    assert notified(notifier_pool, [order]) == [event.event.id]


def test_a_webhook_outage_fails_the_event_and_its_redelivery_delivers_it_once(
    notifier_apps: Apps, webhook: Webhook, notifier_pool: ConnectionPool, unique_id: Callable[[], int]
) -> None:
    client = notifier_apps(
        NOTIFIER_SINK="webhook", NOTIFIER_WEBHOOK_URL=webhook.url, NOTIFIER_WEBHOOK_TRIES="2"
    )["notify_status"]
    order = unique_id()
    event = order_events(unique_id() * 10, order, statuses=("paid",))[0]
    webhook.fail_next = 2  # both tries of the first delivery
    assert post(client, event) == 500
    assert notified(notifier_pool, [order]) == [event.event.id]  # claimed and kept, awaiting delivery
    undelivered = notifier_pool.run(
        "SELECT count(*) FROM notifications WHERE order_id = :o AND delivered_at IS NULL", o=order
    )
    assert undelivered == [[1]]
    assert post(client, event) == 200
    assert post(client, event) == 200
    assert webhook.events(order) == [event.event.id]
