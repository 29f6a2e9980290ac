"""A long Memcached outage does not flood the logs: get_order (the real functions-framework app, real
PostgreSQL, real Memcached, the shop's JSON log handler on stdout) answers every request from the database
while the cache is down, and its warnings about the cache are written once per template and then at most
once per SHOP_LOG_REPEAT_SECONDS (logs.RepeatFilter). What the filter decided is checked exactly: the lines
written, the counts they carry and what it still holds add up to every warning the metric counted; once
Memcached is back and the interval is over, a new warning is written again. Served as the container serves
it (gunicorn's gevent_pywsgi worker) with Memcached SIGSTOPped, each warning is written once and every one is
counted on /metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.observability import logs, settings
from tests.conftest import MakeDatabase
from tests.integration.orders.conftest import Apps
from tests.integration.orders.test_get_order import new_order, read
from tests.integration.orders.test_served_under_gevent import (
    BURST,
    answers_at_once,
    serve_get_order,
    unknown_orders,
)
from tests.polling import wait_for
from tests.unit.observability.conftest import sample

pytestmark = [pytest.mark.integration, pytest.mark.function("get_order")]

CACHE_LOGGER = "shared_lib.cache"
INTERVAL_SECONDS = 2.0  # short, so the test waits for it; the default is 10 s
REQUESTS = 200


@pytest.fixture
def repeat_filter(monkeypatch: pytest.MonkeyPatch) -> Iterator[logs.RepeatFilter]:
    """The shop's log handler on stdout (capsys reads it), its filter at INTERVAL_SECONDS."""
    monkeypatch.setenv("SHOP_LOG_REPEAT_SECONDS", str(INTERVAL_SECONDS))
    settings.reset()
    logs.configure(force=True)
    repeats = logs.repeat_filter()
    assert repeats is not None and repeats.interval == INTERVAL_SECONDS
    yield repeats
    monkeypatch.delenv("SHOP_LOG_REPEAT_SECONDS")
    settings.reset()
    logs.reset()


def cache_warnings(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The cache's warning lines written since the last call."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == CACHE_LOGGER and line["level"] == "warning"]


def counted() -> tuple[float, float]:
    """(written, suppressed) warnings of the cache's logger so far, as the metric counts them."""
    return (
        sample("shop_log_warnings_total", logger=CACHE_LOGGER, outcome="written"),
        sample("shop_log_warnings_total", logger=CACHE_LOGGER, outcome="suppressed"),
    )


def held(repeats: logs.RepeatFilter) -> int:
    return sum(count for (logger, _), count in repeats.held().items() if logger == CACHE_LOGGER)


def test_a_long_memcached_outage_logs_a_bounded_number_of_lines_and_counts_every_warning(
    orders_apps: Apps,
    memcached_flap: MemcachedServer,
    repeat_filter: logs.RepeatFilter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=memcached_flap.address, ORDERS_LOCAL_CACHE_ENTRIES="0")
    orders = [new_order(apps)[0] for _ in range(5)]
    bodies = {uid: read(apps, uid)[2] for uid in orders}
    assert all(read(apps, uid)[:2] == (200, "hit") for uid in orders)
    cache_warnings(capsys)
    written_before, suppressed_before = counted()

    memcached_flap.stop()
    started = time.monotonic()
    for attempt in range(REQUESTS):
        uid = orders[attempt % len(orders)]
        assert read(apps, uid) == (200, "miss", bodies[uid])  # answered from PostgreSQL
    lasted = time.monotonic() - started
    during = cache_warnings(capsys)
    written, suppressed = (a - b for a, b in zip(counted(), (written_before, suppressed_before), strict=True))

    # every request warned at least once (its read of the cache failed): all counted, few written
    assert written + suppressed >= REQUESTS
    assert written == len(during)
    assert suppressed == sum(int(line.get("suppressed", 0)) for line in during) + held(repeat_filter)
    assert suppressed > 0
    # at most one line per template and interval: the first, then one per interval that passed
    templates = [template for logger, template in repeat_filter.watched() if logger == CACHE_LOGGER]
    assert during and templates, "the outage was not logged"
    assert len(during) <= len(templates) * (1 + math.ceil(lasted / INTERVAL_SECONDS)), (templates, during)

    # back: served from Memcached again
    memcached_flap.start()
    wait_for(lambda: read(apps, orders[0])[:2] == (200, "hit"), timeout=30, what="Memcached serving again")
    during += cache_warnings(capsys)  # a line or two while the client had the server out of its ring

    # down again: once the interval is over, a warning that was held back is written again, with the count
    # of those held back before it (a template not seen before is written at once, without one)
    memcached_flap.stop()
    again: list[dict[str, Any]] = []

    def written_again() -> bool:
        assert read(apps, orders[1]) == (200, "miss", bodies[orders[1]])
        again.extend(cache_warnings(capsys))
        return any(line.get("suppressed") for line in again)

    wait_for(written_again, timeout=30, interval=0.1, what="a held-back warning written after the interval")
    written, suppressed = (a - b for a, b in zip(counted(), (written_before, suppressed_before), strict=True))
    assert written == len(during) + len(again)
    reported = sum(int(line.get("suppressed", 0)) for line in [*during, *again])
    assert suppressed == reported + held(repeat_filter)


def test_served_under_gevent_a_sigstopped_memcached_writes_each_warning_once_and_counts_them_all(
    make_database: MakeDatabase,
    memcached_server: MemcachedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the container serves it (functions.entrypoint, gevent_pywsgi), with an interval no test outlasts:
    every cache warning of the outage after its first line is held back and counted, none timed."""
    monkeypatch.setenv("SHOP_LOG_REPEAT_SECONDS", "3600")
    memcached_server.start()  # running (another test may have stopped it)
    memcached = memcached_server.process
    assert memcached is not None
    dsn = make_database("orders")
    with serve_get_order(tmp_path, dsn, memcached_server.address, otlp="", sample_ratio="1.0") as served:
        assert answers_at_once(served, unknown_orders(BURST)) == [404] * BURST  # Memcached up
        os.kill(memcached.pid, signal.SIGSTOP)
        try:
            for _ in range(3):  # the cache's reads time out or find no server left; the database answers
                assert answers_at_once(served, unknown_orders(BURST)) == [404] * BURST
        finally:
            os.kill(memcached.pid, signal.SIGCONT)
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=60) as response:
            scraped = response.read().decode()
        lines = [json.loads(line) for line in served.log_text().splitlines() if line.startswith("{")]
    warned = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "shop_log_warnings_total" and s.labels["logger"] == CACHE_LOGGER
    }
    written = [line for line in lines if line["logger"] == CACHE_LOGGER and line["level"] == "warning"]
    assert warned.get("written") == len(written) > 0
    assert warned.get("written", 0) + warned.get("suppressed", 0) >= 3 * BURST  # each request warned
    # one line per template at the most: shared_lib.cache has five warning templates
    assert len(written) <= 5 and len({line["message"] for line in written}) == len(written), written
    assert not any("suppressed" in line for line in written)
