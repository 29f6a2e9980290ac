"""The order viewer's composition root wires its settings into what it builds."""

from __future__ import annotations

from functions.orders.bootstrap import Root
from functions.orders.settings import OrdersSettings


def test_the_batch_worker_measures_the_dead_letter_topic_the_settings_name() -> None:
    settings = OrdersSettings(kafka_bootstrap="127.0.0.1:9", dead_letter_topic="orders.rejects")
    stream = Root(settings).order_stream()  # built, not connected: nothing dials the address
    assert stream.dead_letter_topic == "orders.rejects"  # its DLQ-size metric, not `orders.dlq`
