"""HttpClient against a real local server: JSON both ways, statuses passed through, outages translated."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.httpclient import HttpClient, UnexpectedResponseError
from tests.integration.shared_lib.serving import serve_in_thread

pytestmark = pytest.mark.integration


SLOW_REPLY = threading.Event()


@Request.application
def peer(request: Request) -> Response:
    if request.path == "/echo":
        payload = {
            "method": request.method,
            "query": dict(request.args),
            "json": request.get_json(silent=True),
            "content_type": request.content_type,
            "key": request.headers.get("X-API-KEY"),
        }
        return Response(json.dumps(payload), content_type="application/json")
    if request.path == "/slow":
        SLOW_REPLY.wait(30)  # answers only when the test lets it (or after 30 s)
        return Response("{}", content_type="application/json")
    if request.path == "/refuse":
        body = {"code": 9, "message": "no", "details": []}
        return Response(json.dumps(body), status=400, content_type="application/json")
    return Response("<html>not json</html>", status=502, content_type="text/html")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(peer) as url:
        yield url


def test_json_in_and_out_with_default_headers_and_query(base_url: str) -> None:
    client = HttpClient(base_url, headers={"X-API-KEY": "k"})
    got: dict[str, Any] = client.post("/echo", json_body={"userId": "1", "n": 2}).json()
    assert got["method"] == "POST"
    assert got["json"] == {"userId": "1", "n": 2}
    assert got["content_type"] == "application/json"
    assert got["key"] == "k"
    got = client.get("/echo", query={"sku": 1076963}).json()
    assert got["query"] == {"sku": "1076963"}


def test_statuses_are_passed_through_with_the_error_code(base_url: str) -> None:
    client = HttpClient(base_url)
    refused = client.post("/refuse", json_body={})
    assert refused.status == 400
    assert refused.error_code() == 9
    broken = client.get("/broken")
    assert broken.status == 502
    assert broken.error_code() is None
    with pytest.raises(UnexpectedResponseError):
        broken.json()


def test_a_closed_port_is_a_transient_error() -> None:
    client = HttpClient(f"http://127.0.0.1:{free_port()}", name="the peer", timeout=1)
    with pytest.raises(TransientError, match="the peer is unavailable"):
        client.get("/echo")


def test_a_reply_slower_than_the_timeout_is_a_transient_error(base_url: str) -> None:
    client = HttpClient(base_url, timeout=0.2)
    try:
        with pytest.raises(TransientError):  # without the timeout, the 200 would come after 30 s
            client.get("/slow")
    finally:
        SLOW_REPLY.set()
