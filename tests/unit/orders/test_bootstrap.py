"""The order viewer's composition root wires its settings into what it builds."""

from __future__ import annotations

from typing import Any

from functions.orders.bootstrap import Root
from functions.orders.settings import OrdersSettings
from shared_lib.cache import InProcessCache
from tests.unit.orders.fakes import InMemoryOrders, RecordingDeadLetters


def test_the_batch_worker_measures_the_dead_letter_topic_the_settings_name() -> None:
    settings = OrdersSettings(kafka_bootstrap="127.0.0.1:9", dead_letter_topic="orders.rejects")
    stream = Root(settings).order_stream()  # built, not connected: nothing dials the address
    assert stream.dead_letter_topic == "orders.rejects"  # its DLQ-size metric, not `orders.dlq`


def viewer_root(**settings: Any) -> Root:
    """A root on in-memory orders and dead letters (no pool, no producer) with these settings."""
    return Root(
        OrdersSettings.model_validate(settings), orders=InMemoryOrders(), dead_letters=RecordingDeadLetters()
    )


def test_found_orders_are_kept_in_this_process_in_front_of_memcached_within_the_settings_bounds() -> None:
    # the Memcached client connects on first use: nothing dials the address here
    root = viewer_root(memcached="127.0.0.1:9", local_cache_entries=7, local_cache_bytes=4096)
    local = root.orders_service.local
    assert isinstance(local, InProcessCache) and local is root.local_cache
    assert (local.max_entries, local.max_bytes, local.name) == (7, 4096, "orders-local")
    assert viewer_root(memcached="127.0.0.1:9", local_cache_entries=0).orders_service.local is None
    default = viewer_root(memcached="127.0.0.1:9").orders_service.local
    assert isinstance(default, InProcessCache) and default.max_entries > 0
    # without Memcached the only cache is already in this process: no second copy
    alone = viewer_root(memcached="")
    assert isinstance(alone.cache, InProcessCache) and alone.orders_service.local is None
