"""get_order through the real functions-framework apps on real PostgreSQL and a real Memcached: a miss then a
hit, warm on ingest, Memcached stopped mid-test (served from the database, quickly), never there at all; and
the tier in this process in front of Memcached (ORDERS_LOCAL_CACHE_ENTRIES): found orders kept, 404s not."""

from __future__ import annotations

import json
import random

import pytest
from flask.testing import FlaskClient

from functions.devtools import orders_generator as generator
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.ports import free_port
from tests.integration.orders.conftest import Apps, ingest
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.function("get_order")]


def new_order(apps: dict[str, FlaskClient]) -> tuple[str, bytes]:
    order = generator.make_order(random.Random())
    value = generator.encode(order)
    ingest(value)
    return order["order_uid"], value


def read(apps: dict[str, FlaskClient], uid: str) -> tuple[int, str | None, bytes]:
    response = apps["get_order"].get(f"/order/{uid}")
    return response.status_code, response.headers.get("X-Cache"), response.get_data()


def test_a_miss_then_a_hit_in_the_sample_shape(orders_apps: Apps, memcached_address: str) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=memcached_address, ORDERS_WARM_CACHE="false")
    uid, value = new_order(apps)
    status, cache, body = read(apps, uid)
    assert (status, cache) == (200, "miss")
    assert json.loads(body) == json.loads(value) and list(json.loads(body)) == list(json.loads(value))
    assert read(apps, uid) == (200, "hit", body)


def test_an_order_is_warm_in_memcached_as_soon_as_it_is_stored(
    orders_apps: Apps, memcached_address: str
) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=memcached_address)
    uid, _ = new_order(apps)
    # a new process (another replica): the order is in Memcached, not in this process
    apps = orders_apps(ORDERS_MEMCACHED=memcached_address)
    assert read(apps, uid)[:2] == (200, "hit")


def test_memcached_stopped_mid_test_is_served_from_the_database(
    orders_apps: Apps, memcached_flap: MemcachedServer
) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=memcached_flap.address, ORDERS_LOCAL_CACHE_ENTRIES="0")
    uid, _ = new_order(apps)
    status, cache, body = read(apps, uid)
    assert (status, cache) == (200, "hit")
    memcached_flap.stop()
    assert read(apps, uid) == (200, "miss", body)
    other, _ = new_order(apps)  # ingest goes on without the cache
    assert read(apps, other)[:2] == (200, "miss")
    assert read(apps, "unknown-order")[0] == 404
    memcached_flap.start()  # empty: the client asks it again after a while, a miss stores, then hits
    wait_for(lambda: read(apps, other)[:2] == (200, "hit"), timeout=30, what="cached again, memcached back")


def test_a_memcached_that_never_ran_is_served_from_the_database(orders_apps: Apps) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=f"127.0.0.1:{free_port()}", ORDERS_LOCAL_CACHE_ENTRIES="0")
    uid, _ = new_order(apps)
    for _ in range(2):
        assert read(apps, uid)[:2] == (200, "miss")


def test_an_order_read_once_is_served_from_this_process_while_memcached_is_down(
    orders_apps: Apps, memcached_flap: MemcachedServer
) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=memcached_flap.address)  # the tier in this process: on by default
    uid, _ = new_order(apps)
    status, cache, body = read(apps, uid)  # Memcached's (warm on ingest); now kept here too
    assert (status, cache) == (200, "hit")
    unread, _ = new_order(apps)
    memcached_flap.stop()
    assert read(apps, uid) == (200, "hit", body)  # without Memcached and without the database
    assert read(apps, unread)[:2] == (200, "miss")  # never read here: from the database …
    assert read(apps, unread)[:2] == (200, "hit")  # … and kept here from then on


def test_a_404_is_never_kept_in_this_process_and_the_order_is_served_once_it_arrives(
    orders_apps: Apps, memcached_address: str
) -> None:
    apps = orders_apps(ORDERS_MEMCACHED=memcached_address, ORDERS_WARM_CACHE="false")
    order = generator.make_order(random.Random())
    uid = order["order_uid"]
    for _ in range(2):
        assert read(apps, uid)[0] == 404
    ingest(generator.encode(order))
    status, cache, body = read(apps, uid)
    assert (status, cache) == (200, "miss") and json.loads(body)["order_uid"] == uid
    assert read(apps, uid) == (200, "hit", body)
