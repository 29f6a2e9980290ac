"""Which event transport bootstrap picks from the settings (no broker or server needed: nothing connects)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from functions.loms import bootstrap
from functions.loms.adapters.events import NoEventTransport, SerializedPublisher
from functions.loms.domain import OrderStatus, OrderStatusChanged
from functions.loms.service import cloudevent
from shared_lib.errors import TransientError
from shared_lib.events import HttpDeliveryPublisher, KafkaPublisher


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    bootstrap.reset()
    yield
    bootstrap.reset()


def test_kafka_wins_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOMS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("LOMS_EVENT_SINKS", "loms.order-events=http://127.0.0.1:8085/events/notify_status")
    chosen = bootstrap.publisher()
    assert isinstance(chosen, SerializedPublisher) and isinstance(chosen.inner, KafkaPublisher)
    assert chosen.inner.bootstrap_servers == "127.0.0.1:9092"


def test_http_delivery_is_the_embedded_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOMS_EVENT_SINKS", "loms.order-events=http://127.0.0.1:8085/events/notify_status")
    chosen = bootstrap.publisher()
    assert isinstance(chosen, SerializedPublisher) and isinstance(chosen.inner, HttpDeliveryPublisher)
    assert dict(chosen.inner.routes) == {"loms.order-events": ("http://127.0.0.1:8085/events/notify_status",)}


def test_sinks_without_the_order_topic_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOMS_EVENT_SINKS", "other.topic=http://127.0.0.1:8085/x")
    with pytest.raises(ValueError, match=r"loms\.order-events"):
        bootstrap.publisher()


def test_without_a_transport_events_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOMS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("LOMS_EVENT_SINKS", raising=False)
    chosen = bootstrap.publisher()
    assert isinstance(chosen, NoEventTransport)
    event = cloudevent(OrderStatusChanged(1, 1, 31337, OrderStatus.NEW, datetime(2026, 1, 1, tzinfo=UTC)))
    with pytest.raises(TransientError, match="no event transport configured"):
        chosen.publish("loms.order-events", [event])
    chosen.publish("loms.order-events", [])
