"""The X-Ray path: with SHOP_TRACING=xray a request is a segment that honours the caller's X-Amzn-Trace-Id,
its queries (pg8000, real PostgreSQL) and outbound calls are subsegments, even from the fan-out pool, and the
UDP datagrams the daemon receives are documents X-Ray's PutTraceSegments accepts (moto)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from werkzeug.serving import make_server
from werkzeug.test import Client

from shared_lib.httpclient import HttpClient
from shared_lib.observability import server, settings, tracing
from shared_lib.observability.xray import XrayBackend
from shared_lib.postgres import ConnectionPool
from shared_lib.workpool import map_bounded

pytestmark = pytest.mark.integration

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 standing in for the X-Ray daemon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[dict[str, Any]]:
    """Every document sent so far: each datagram is the protocol header, a newline, then the JSON."""
    documents: list[dict[str, Any]] = []
    sock.settimeout(1)
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return documents
        header, _, body = data.decode().partition("\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        documents.append(json.loads(body))


@pytest.fixture
def peer() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append({"trace": environ.get("HTTP_X_AMZN_TRACE_ID", "")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()
    thread.join(5)


def test_a_request_its_queries_and_calls_reach_the_daemon_as_one_accepted_trace(
    daemon: socket.socket,
    peer: tuple[str, list[dict[str, str]]],
    make_database: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TRACING", "xray")
    monkeypatch.setenv("AWS_XRAY_DAEMON_ADDRESS", f"127.0.0.1:{daemon.getsockname()[1]}")
    settings.reset()
    tracing.reset()
    tracing.set_service("cart")
    assert isinstance(tracing.backend(), XrayBackend)
    pool = ConnectionPool(make_database("cart"), size=4)
    url, seen = peer
    client = HttpClient(url, name="loms")

    def list_cart(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        pool.run("SELECT sku, count FROM cart_items WHERE user_id = :u", u=31337)
        map_bounded(lambda sku: client.get(f"/stock/info?sku={sku}").status, [1, 2], 2)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    app = server.ObservedFunction(
        list_cart, function="list_cart", service="cart", route="/user/{user_id:id}/cart", method="GET"
    )
    try:
        response = Client(app).get(
            "/user/31337/cart", headers={"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1"}
        )
        assert response.status_code == 200
        documents = received(daemon)
    finally:
        pool.close()
        client.close()
        tracing.reset()

    (segment,) = documents  # small enough to travel whole, with its subsegments inside
    assert (segment["trace_id"], segment["parent_id"], segment["name"]) == (ROOT, PARENT, "cart")
    assert segment["http"]["response"]["status"] == 200
    subsegments = segment["subsegments"]
    sql = [s for s in subsegments if s.get("sql")]
    calls = [s for s in subsegments if s.get("http", {}).get("request", {}).get("method") == "GET"]
    assert len(sql) == 1 and "FROM cart_items" in sql[0]["sql"]["sanitized_query"]
    assert sql[0]["sql"]["database_type"] == "PostgreSQL" and sql[0]["namespace"] == "remote"
    assert len(calls) == 2  # made on the pool's threads, still under the request's segment
    assert all(c["http"]["response"]["status"] == 200 for c in calls)
    sent = sorted(h["trace"] for h in seen)
    assert sent == sorted(f"Root={ROOT};Parent={c['id']};Sampled=1" for c in calls)

    with mock_aws():
        xray = boto3.client("xray", region_name="us-east-1")
        answer = xray.put_trace_segments(TraceSegmentDocuments=[json.dumps(d) for d in documents])
        assert answer["UnprocessedTraceSegments"] == []
        summaries = xray.get_trace_summaries(
            StartTime=segment["start_time"] - 60, EndTime=segment["end_time"] + 60
        )["TraceSummaries"]
        assert [s["Id"] for s in summaries] == [ROOT]


def test_an_unsampled_caller_sends_nothing(daemon: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = XrayBackend.to_daemon("cart", f"127.0.0.1:{daemon.getsockname()[1]}")
    tracing.use(backend)
    try:
        unsampled = {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=0"}
        with backend.server("GET /", unsampled, {}), tracing.span("SELECT cart", "client"):
            pass
        assert received(daemon) == []
    finally:
        tracing.reset()


def test_a_consumer_segment_names_the_producer_it_links_to(daemon: socket.socket) -> None:
    backend = XrayBackend.to_daemon("notifier", f"127.0.0.1:{daemon.getsockname()[1]}")
    producer = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    with backend.consumer("process loms.order-events", producer, {"messaging.system": "kafka"}):
        pass
    (segment,) = received(daemon)
    assert segment["trace_id"] != ROOT
    assert segment["metadata"]["shop"]["links"] == [{"trace_id": ROOT, "id": PARENT}]
    assert segment["annotations"]["linked_trace_id"] == ROOT
