"""The two cluster-internal cron functions through a real Flask test client, on the in-memory fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from functions import table
from functions.loms import bootstrap
from functions.loms.domain import Item, OrderStatus, StockLevel
from functions.loms.settings import LomsSettings
from tests.unit.loms.fakes import InMemoryLoms, RecordingPublisher

MAIN = Path(__file__).resolve().parents[3] / "functions" / "loms" / "main.py"
SKU = 1076963
# What a PingSource POSTs: a CloudEvent in binary mode whose data the functions do not need.
PING = {
    "headers": {
        "ce-specversion": "1.0",
        "ce-id": "ping-1",
        "ce-source": "/apis/v1/namespaces/shop/pingsources/relay",
        "ce-type": "dev.knative.sources.ping",
    },
    "data": json.dumps({"tick": True}),
    "content_type": "application/json",
}


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    targets = ("relay_outbox", "cancel_stale_orders")
    return {t: functions_framework.create_app(target=t, source=str(MAIN)) for t in targets}


# a relay that drains and stops (no linger), polling quickly; a sweep of orders older than ten minutes that
# keeps every sent event
SETTINGS = LomsSettings(
    relay_batch_size=1000,
    relay_poll_seconds=0.05,
    relay_linger_seconds=0,
    stale_after_seconds=600,
    sweep_batch_size=500,
    outbox_retention_seconds=0,
)


@pytest.fixture
def world() -> Iterator[tuple[InMemoryLoms, RecordingPublisher]]:
    loms, publisher = InMemoryLoms(), RecordingPublisher()
    loms.put_stock(SKU, total_count=10)
    loms.bootstrap(SETTINGS, publisher=publisher)
    yield loms, publisher
    bootstrap.reset()


def post(apps: dict[str, Any], function: str, **kwargs: Any) -> Any:
    return apps[function].test_client().post(table.route(function).path, **kwargs)


@pytest.mark.function("relay_outbox")
def test_relay_outbox_publishes_and_says_how_many(
    apps: dict[str, Any], world: tuple[InMemoryLoms, RecordingPublisher]
) -> None:
    loms, publisher = world
    order_id = loms.service.create_order(31337, [Item(SKU, 1)])
    loms.service.pay_order(order_id)
    response = post(apps, "relay_outbox", **PING)
    assert (response.status_code, response.json) == (200, {"published": 3})
    assert [int(e.id) for e in publisher.events()] == [e.event_id for e in loms.events()]
    assert post(apps, "relay_outbox").json == {"published": 0}  # no body at all is fine too


@pytest.mark.function("relay_outbox")
def test_relay_outbox_is_a_503_while_the_transport_fails_and_keeps_the_events(
    apps: dict[str, Any], world: tuple[InMemoryLoms, RecordingPublisher]
) -> None:
    loms, publisher = world
    loms.service.create_order(31337, [Item(SKU, 1)])
    publisher.failing = True
    response = post(apps, "relay_outbox", **PING)
    assert (response.status_code, response.json["code"]) == (503, 14)
    assert len(loms.unsent()) == 2
    publisher.failing = False
    assert post(apps, "relay_outbox", **PING).json == {"published": 2}


@pytest.mark.function("cancel_stale_orders")
def test_cancel_stale_orders_cancels_and_says_how_many(
    apps: dict[str, Any], world: tuple[InMemoryLoms, RecordingPublisher]
) -> None:
    loms, _ = world
    stale = loms.service.create_order(31337, [Item(SKU, 3)])
    loms.advance(601)
    response = post(apps, "cancel_stale_orders", **PING)
    assert (response.status_code, response.json) == (
        200,
        {"cancelled": 1, "orphans_released": 0, "busy_shards": 0, "events_pruned": 0},
    )
    assert loms.service.order_info(stale).status is OrderStatus.CANCELLED
    assert loms.level(SKU) == StockLevel(SKU, 10, 0)
    assert post(apps, "cancel_stale_orders", **PING).json["cancelled"] == 0


@pytest.mark.parametrize("function", ["relay_outbox", "cancel_stale_orders"])
def test_cron_functions_take_post_only(
    apps: dict[str, Any], world: tuple[InMemoryLoms, RecordingPublisher], function: str
) -> None:
    response = apps[function].test_client().get(table.route(function).path)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    assert apps[function].test_client().post("/internal/elsewhere").status_code == 404


@pytest.mark.function("relay_outbox")
def test_relay_outbox_is_a_500_on_a_bug_and_keeps_the_events(
    apps: dict[str, Any], world: tuple[InMemoryLoms, RecordingPublisher]
) -> None:
    loms, _ = world

    class Broken(RecordingPublisher):
        def publish(self, topic: str, events: Any) -> None:
            raise ValueError("a bug in the transport")

    loms.bootstrap(SETTINGS, publisher=Broken())
    loms.service.create_order(31337, [Item(SKU, 1)])
    response = post(apps, "relay_outbox", **PING)
    assert (response.status_code, response.json["code"]) == (500, 13)
    assert len(loms.unsent()) == 2
