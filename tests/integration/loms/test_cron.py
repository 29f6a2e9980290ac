"""The relay and the sweep as deployed: built by bootstrap from the environment, called through their
functions-framework targets (as a PingSource calls them) or run as the long-running relay (a loop in a thread,
and the relay_worker process the dev server and the cluster run), on real PostgreSQL with real Kafka, with the
HTTP delivery fallback, and with no transport at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from functions import table
from functions.loms import bootstrap
from functions.loms.adapters.pg_shards import Shards
from functions.loms.domain import Item, OrderStatus
from functions.loms.settings import LomsSettings
from shared_lib.devtools.ports import free_port
from shared_lib.events import Event
from tests.conftest import ROOT
from tests.http_client import fetch
from tests.integration.events.sink import event_from_http
from tests.integration.loms.conftest import MakeDatabase, PgLoms
from tests.integration.loms.test_events_kafka import read_topic
from tests.polling import wait_for as eventually

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]
MAIN = Path(__file__).resolve().parents[3] / "functions" / "loms" / "main.py"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, make_database: MakeDatabase) -> Iterator[PgLoms]:
    """Two fresh shards in LOMS_SHARD_DSNS, a short linger and poll; bootstrap rebuilt from scratch."""
    for name in ("LOMS_KAFKA_BOOTSTRAP", "LOMS_EVENT_SINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOMS_SHARD_DSNS", f"{make_database('loms')},{make_database('loms')}")
    monkeypatch.setenv("LOMS_RELAY_LINGER_SECONDS", "0.3")
    # the longest poll allowed, longer than any wait below: only a NOTIFY wakes a relay in time
    monkeypatch.setenv("LOMS_RELAY_POLL_SECONDS", "60")
    config = LomsSettings()
    shards = Shards.open(config.shards(), config.replicas(), config.pool_size)
    bootstrap.bootstrap(shards=shards)
    yield PgLoms(shards)
    inner = getattr(bootstrap.publisher(), "inner", None)
    if inner is not None and hasattr(inner, "close"):
        inner.close()
    bootstrap.reset()
    shards.close()


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    targets = ("relay_outbox", "cancel_stale_orders")
    return {t: functions_framework.create_app(target=t, source=str(MAIN)) for t in targets}


def post(apps: dict[str, Any], function: str) -> Any:
    return apps[function].test_client().post(table.route(function).path, json={})


def test_the_cron_functions_on_kafka(
    apps: dict[str, Any],
    environment: PgLoms,
    monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    unique_id: UniqueId,
) -> None:
    monkeypatch.setenv("LOMS_KAFKA_BOOTSTRAP", kafka_bootstrap)
    bootstrap.bootstrap(shards=environment.shards)  # the settings read again, the same shards
    loms, sku = environment, unique_id()
    loms.put_stock(sku, 10)
    service = bootstrap.loms_service()
    users = {unique_id() * 2, unique_id() * 2 + 1}  # order ids repeat across fresh databases; these do not
    kept = service.create_order(min(users), [Item(sku, 1)])
    stale = service.create_order(max(users), [Item(sku, 2)])
    service.pay_order(kept)
    started = time.monotonic()
    response = post(apps, "relay_outbox")
    assert (response.status_code, response.json) == (200, {"published": 5})
    assert time.monotonic() - started >= 0.3  # it lingered, listening
    loms.backdate(stale, 3600)
    response = post(apps, "cancel_stale_orders")
    assert (response.status_code, response.json) == (
        200,
        {"cancelled": 1, "orphans_released": 0, "busy_shards": 0, "events_pruned": 0},
    )
    assert service.order_info(stale).status is OrderStatus.CANCELLED
    assert post(apps, "relay_outbox").json == {"published": 1}
    records = read_topic(
        kafka_bootstrap, "loms.order-events", lambda rs: sum(r.value["user_id"] in users for r in rs) >= 6
    )
    mine = [r for r in records if r.value["user_id"] in users]
    assert sorted(r.ce_id for r in mine) == sorted(loms.outbox_ids())
    swept = [r.value["status"] for r in mine if r.key == str(stale)]
    assert swept == ["new", "awaiting payment", "cancelled"]


def test_without_a_transport_the_relay_is_a_503_and_the_events_wait(
    apps: dict[str, Any], environment: PgLoms, unique_id: UniqueId
) -> None:
    loms, sku = environment, unique_id()
    loms.put_stock(sku, 10)
    bootstrap.loms_service().create_order(unique_id(), [Item(sku, 1)])
    response = post(apps, "relay_outbox")
    assert (response.status_code, response.json["code"]) == (503, 14)
    assert "no event transport" in response.json["message"]
    assert loms.unsent() == 2


def listening(loms: PgLoms) -> bool:
    """Every shard has a relay connection that LISTENs and has gone on to its next statement."""
    return all(
        pool.run(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'loms-relay'"
            " AND query NOT LIKE 'LISTEN%'"
        )[0][0]
        for pool in loms.shards.primaries
    )


class Sink:
    """A CloudEvent function stand-in on a real port: records what it accepted."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        event = event_from_http({k.lower(): v for k, v in request.headers.items()}, request.get_data())
        with self.lock:
            self.events.append(event)
        return Response(status=204)(environ, start_response)

    def statuses(self) -> list[str]:
        with self.lock:
            return [json.loads(e.data)["status"] for e in self.events]


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    app = Sink()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}/events/notify_status"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_relay_forever_delivers_over_http_as_soon_as_events_commit(
    environment: PgLoms,
    monkeypatch: pytest.MonkeyPatch,
    sink: tuple[Sink, str],
    unique_id: UniqueId,
) -> None:
    received, url = sink
    monkeypatch.setenv("LOMS_EVENT_SINKS", f"loms.order-events={url}")
    bootstrap.bootstrap(shards=environment.shards)  # the settings read again, the same shards
    loms, sku = environment, unique_id()
    loms.put_stock(sku, 10)
    service = bootstrap.loms_service()
    stop = threading.Event()
    loop = threading.Thread(target=bootstrap.relay_forever, args=(stop,))
    loop.start()
    try:
        eventually(lambda: listening(loms))  # from here on a commit cannot slip past the loop unnoticed
        order_id = service.create_order(unique_id() * 2 + 1, [Item(sku, 1)])
        # well within the 60 s poll: only the NOTIFY of each commit can bring them
        eventually(lambda: received.statuses() == ["new", "awaiting payment"], timeout=45)
        service.cancel_order(order_id)
        eventually(lambda: received.statuses() == ["new", "awaiting payment", "cancelled"], timeout=45)
    finally:
        stop.set()
        service.create_order(unique_id(), [Item(sku, 1)])  # wakes the loop so it sees the stop now
        loop.join(timeout=45)
    assert not loop.is_alive()
    assert {e.id for e in received.events} <= {str(i) for i in loms.outbox_ids()}
    assert all(e.key is None or e.key == str(order_id).encode() for e in received.events[:3])


def worker_get(port: int, path: str) -> tuple[int, bytes]:
    """(0, b"") while nothing listens yet."""
    try:
        return fetch(f"http://127.0.0.1:{port}{path}", timeout=30)
    except OSError:
        return 0, b""


def test_the_relay_worker_process_delivers_on_commit_serves_its_probes_and_stops_on_sigterm(
    environment: PgLoms,
    sink: tuple[Sink, str],
    unique_id: UniqueId,
) -> None:
    """`python -m functions.loms.relay_worker --port N`, as the cluster's Deployment runs it."""
    received, url = sink
    loms, sku = environment, unique_id()
    loms.put_stock(sku, 10)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.loms.relay_worker", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "LOMS_EVENT_SINKS": f"loms.order-events={url}"},
    )
    try:
        eventually(lambda: worker_get(port, "/healthz")[0] == 200 and listening(loms), timeout=30)
        bootstrap.loms_service().create_order(unique_id() * 2, [Item(sku, 1)])
        # LOMS_RELAY_POLL_SECONDS is 60 here: well within it, only the NOTIFY can bring the events
        eventually(lambda: received.statuses() == ["new", "awaiting payment"], timeout=45)
        assert sorted(e.id for e in received.events) == sorted(str(i) for i in loms.outbox_ids())
        eventually(lambda: loms.unsent() == 0, timeout=45)  # marked sent once delivered
        status, body = worker_get(port, "/healthz")
        health = json.loads(body)
        assert (status, health["status"]) == (200, "ok")  # its loop went round recently enough, it decided
        assert health["last_pass_seconds_ago"] >= 0  # the pass the NOTIFY started, not "still starting"
        status, body = worker_get(port, "/metrics")
        assert status == 200
        text = body.decode()
        assert 'shop_events_published_total{topic="loms.order-events"} 2.0' in text
        assert "shop_outbox_backlog{" in text
        assert worker_get(port, "/elsewhere")[0] == 404
        process.send_signal(signal.SIGTERM)
        bootstrap.loms_service().create_order(unique_id() * 2, [Item(sku, 1)])  # its NOTIFY wakes the relay
        assert process.wait(timeout=60) == 0  # it saw the stop once awake, closed its connections, exit 0
        # whatever it took up after the stop, it finished: each event is either delivered and marked sent, or
        # still in the outbox for the next relay
        assert len({e.id for e in received.events}) + loms.unsent() == len(loms.outbox_ids())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
