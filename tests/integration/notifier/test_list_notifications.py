"""list_notifications through the real functions-framework app on real PostgreSQL and a real memcached:
hits and misses, never stale after a new event, memcached stopped mid-test, one query for concurrent misses.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import functions_framework
import pytest

from functions.notifier import bootstrap
from functions.notifier.adapters.postgres import PgNotificationHistory, PgNotificationStore
from functions.notifier.domain import Notification
from functions.notifier.service import NotifierService
from shared_lib.cache import LOCK_SUFFIX, Cache, MemcachedCache
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.ports import free_port
from shared_lib.postgres import ConnectionPool
from tests.integration.notifier.conftest import MAIN, Apps
from tests.polling import wait_for
from tests.unit.notifier.fakes import CountingHistory, RecordingSink, cloud_event, order_events
from tests.unit.shared_lib.test_cache import followed_by

pytestmark = [pytest.mark.integration, pytest.mark.function("list_notifications")]

YEAR = {"from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z"}


def read(client: Any, user: int, **period: str) -> tuple[int, str | None, Any]:
    response = client.get("/notifications", query_string={"user_id": str(user), **(period or YEAR)})
    return response.status_code, response.headers.get("X-Cache"), response.json


def notify(client: Any, event: Any) -> None:
    headers, body = cloud_event(event)
    assert client.post("/", headers=headers, data=body).status_code == 200


def test_a_miss_then_a_hit_with_x_cache(
    notifier_apps: Apps, memcached_address: str, unique_id: Callable[[], int]
) -> None:
    apps = notifier_apps(NOTIFIER_MEMCACHED=memcached_address)
    user, order = unique_id(), unique_id()
    for event in order_events(unique_id() * 10, order, user):
        notify(apps["notify_status"], event)
    status, cache, body = read(apps["list_notifications"], user)
    assert (status, cache) == (200, "miss")
    assert body["user_id"] == str(user)
    assert [(i["order_id"], i["status"]) for i in body["items"]] == [
        (str(order), "new"),
        (str(order), "awaiting payment"),
        (str(order), "paid"),
    ]
    assert read(apps["list_notifications"], user) == (200, "hit", body)
    # another period of the same user is cached on its own
    assert (
        read(apps["list_notifications"], user, **{"from": "2026-11-01T00:00:00Z", "to": YEAR["to"]})[1]
        == "miss"
    )


def test_the_history_is_never_stale_after_a_new_event(
    notifier_apps: Apps, memcached_address: str, unique_id: Callable[[], int]
) -> None:
    apps = notifier_apps(NOTIFIER_MEMCACHED=memcached_address)
    user, order = unique_id(), unique_id()
    new, awaiting, _ = order_events(unique_id() * 10, order, user)
    notify(apps["notify_status"], new)
    read(apps["list_notifications"], user)
    read(apps["list_notifications"], user, **{"from": "2026-11-22T00:00:00Z", "to": "2026-12-10T00:00:00Z"})
    assert read(apps["list_notifications"], user)[1] == "hit"
    notify(apps["notify_status"], awaiting)
    status, cache, body = read(apps["list_notifications"], user)
    assert (status, cache) == (200, "miss")
    assert [i["status"] for i in body["items"]] == ["new", "awaiting payment"]
    # every cached period of that user went stale at once
    _, cache, day = read(
        apps["list_notifications"], user, **{"from": "2026-11-22T00:00:00Z", "to": "2026-12-10T00:00:00Z"}
    )
    assert (cache, len(day["items"])) == ("miss", 2)
    # a duplicate changes nothing, so the cached history stays valid
    notify(apps["notify_status"], awaiting)
    assert read(apps["list_notifications"], user)[1] == "hit"


def test_memcached_stopped_mid_test_still_answers_from_the_database(
    notifier_apps: Apps, memcached_flap: MemcachedServer, unique_id: Callable[[], int]
) -> None:
    apps = notifier_apps(NOTIFIER_MEMCACHED=memcached_flap.address)
    user, order = unique_id(), unique_id()
    new, awaiting, _ = order_events(unique_id() * 10, order, user)
    notify(apps["notify_status"], new)
    read(apps["list_notifications"], user)
    assert read(apps["list_notifications"], user)[1] == "hit"
    memcached_flap.stop()
    status, cache, body = read(apps["list_notifications"], user)
    assert (status, cache, len(body["items"])) == (200, "miss", 1)
    notify(apps["notify_status"], awaiting)  # a new event while memcached is down
    status, cache, body = read(apps["list_notifications"], user)
    assert (status, cache, len(body["items"])) == (200, "miss", 2)
    memcached_flap.start()  # empty: the client asks it again after a while, a miss stores, then hits
    wait_for(
        lambda: read(apps["list_notifications"], user)[1] == "hit",
        timeout=30,
        what="cached again once memcached is back",
    )


def test_a_memcached_that_never_ran_is_served_from_the_database(
    notifier_apps: Apps, unique_id: Callable[[], int]
) -> None:
    apps = notifier_apps(NOTIFIER_MEMCACHED=f"127.0.0.1:{free_port()}")
    user = unique_id()
    notify(apps["notify_status"], order_events(unique_id() * 10, unique_id(), user, statuses=("new",))[0])
    for _ in range(2):
        status, cache, body = read(apps["list_notifications"], user)
        assert (status, cache, len(body["items"])) == (200, "miss", 1)


def test_the_database_down_is_503(notifier_apps: Apps, memcached_address: str) -> None:
    apps = notifier_apps(
        NOTIFIER_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/notifier",
        NOTIFIER_MEMCACHED=memcached_address,
    )
    status, _, body = read(apps["list_notifications"], 31337)
    assert (status, body["code"]) == (503, 14)


class HeldHistory(CountingHistory):
    """Counts the history queries that reach PostgreSQL; each is held until the test releases it."""

    def __init__(self, inner: Any, release: threading.Event) -> None:
        super().__init__(inner)
        self.release = release

    def between(self, user_id: int, start: datetime, end: datetime) -> list[Notification]:
        assert self.release.wait(60), "the test never released the load"
        return super().between(user_id, start, end)


def service_on(pool: ConnectionPool, history: CountingHistory, memcached: str) -> NotifierService:
    return NotifierService(
        store=PgNotificationStore(pool),
        history=history,
        sink=RecordingSink(),
        cache=MemcachedCache(memcached, prefix="notifier:"),
        counters=bootstrap.counters(),
    )


def concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_misses_in_one_replica_make_one_database_query(
    notifier_apps: Apps,
    notifier_pool: ConnectionPool,
    memcached_address: str,
    unique_id: Callable[[], int],
) -> None:
    apps = notifier_apps(NOTIFIER_MEMCACHED=memcached_address)
    user = unique_id()
    notify(apps["notify_status"], order_events(unique_id() * 10, unique_id(), user, statuses=("new",))[0])
    clients = [
        functions_framework.create_app(target="list_notifications", source=MAIN).test_client()
        for _ in range(16)
    ]
    # the one query is held until the 15 other requests were made to wait for it: none can come after it
    with followed_by(15) as waiting:
        history = HeldHistory(PgNotificationHistory(notifier_pool), waiting.all_in)
        bootstrap.bootstrap(
            store=PgNotificationStore(notifier_pool),
            history=history,
            sink=RecordingSink(),
            cache=MemcachedCache(memcached_address, prefix="notifier:"),
            counters=bootstrap.counters(),
        )
        results = concurrently(16, lambda i: read(clients[i], user))
    assert history.queries == 1
    assert all(status == 200 and len(body["items"]) == 1 for status, _, body in results)
    assert sorted(cache for _, cache, _ in results) == ["miss"] * 16  # all sixteen missed, one query


class LockWatch:
    """A replica's own memcached client, telling when load_through's load lock was refused to it: another
    replica holds the load of that key, and this one is waiting for it."""

    def __init__(self, inner: Cache, refused: Callable[[], object]) -> None:
        self.inner = inner
        self.refused = refused

    def get(self, key: str) -> Any | None:
        return self.inner.get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        return self.inner.get_many(keys)

    def set(self, key: str, value: Any, ttl: float) -> None:
        self.inner.set(key, value, ttl)

    def add(self, key: str, value: Any, ttl: float) -> bool | None:
        taken = self.inner.add(key, value, ttl)
        if taken is False and key.endswith(LOCK_SUFFIX):
            self.refused()
        return taken

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_concurrent_misses_across_replicas_make_one_database_query(
    notifier_apps: Apps, notifier_pool: ConnectionPool, memcached_address: str, unique_id: Callable[[], int]
) -> None:
    apps = notifier_apps(NOTIFIER_MEMCACHED=memcached_address)
    user = unique_id()
    notify(apps["notify_status"], order_events(unique_id() * 10, unique_id(), user, statuses=("new",))[0])
    release = threading.Event()
    history = HeldHistory(PgNotificationHistory(notifier_pool), release)
    waiting: set[int] = set()
    # six replicas: each its own service and memcached client; only memcached can make them take turns.
    # None gives up on the held load (the wait is long): what they do is decided by the lock, not the clock
    replicas = [
        NotifierService(
            store=PgNotificationStore(notifier_pool),
            history=history,
            sink=RecordingSink(),
            cache=LockWatch(
                MemcachedCache(memcached_address, prefix="notifier:"), functools.partial(waiting.add, i)
            ),
            counters=bootstrap.counters(),
            cache_wait_seconds=120.0,
        )
        for i in range(6)
    ]
    start, end = (bootstrap_instant(YEAR["from"]), bootstrap_instant(YEAR["to"]))
    results: list[Any] = [None] * 6

    def replica(i: int) -> None:
        results[i] = replicas[i].history_of(user, start, end)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        # the one load is held until the five other replicas were refused its lock: all five wait for it
        wait_for(lambda: len(waiting) >= 5, timeout=60, what="five replicas waiting for another's load")
    finally:
        release.set()
        for thread in threads:
            thread.join(120)
    assert history.queries == 1
    assert sorted(hit for _items, hit in results) == [False, True, True, True, True, True]
    assert all(len(items) == 1 for items, _hit in results)


def bootstrap_instant(text: str) -> Any:
    from functions.notifier.domain import parse_instant

    return parse_instant(text, "instant")


def test_the_widest_period_postgres_is_asked_about(notifier_apps: Apps, unique_id: Callable[[], int]) -> None:
    apps = notifier_apps()
    user = unique_id()
    notify(apps["notify_status"], order_events(unique_id() * 10, unique_id(), user, statuses=("new",))[0])
    status, _, body = read(
        apps["list_notifications"],
        user,
        **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
    )
    assert (status, len(body["items"])) == (200, 1)
