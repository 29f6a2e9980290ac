"""The container entry point in-process: health routes around a function's app, the argv, shutdown hooks.

Serving through gunicorn and SIGTERM draining are exercised on a real process in tests/cluster/test_image.py.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gunicorn.config
import gunicorn.glogging
import pytest
from gunicorn.http.errors import InvalidHeaderName, InvalidRequestLine, LimitRequestHeaders, LimitRequestLine
from werkzeug.test import Client

from functions import entrypoint, table
from shared_lib import lifecycle
from shared_lib.devtools.ports import free_port
from tests.polling import wait_for
from tests.unit.notifier.fakes import Notifier


@pytest.fixture(autouse=True)
def fresh_lifecycle() -> Iterator[None]:
    lifecycle.reset()
    yield
    lifecycle.reset()


@pytest.fixture(scope="module")
def product_client() -> Client:
    return Client(entrypoint.function_app("get_product"))


def test_command_runs_the_module_with_the_target() -> None:
    assert entrypoint.command("list_cart") == [
        "python",
        "-m",
        "functions.entrypoint",
        "--target",
        "list_cart",
    ]


def test_the_function_answers_beside_the_health_routes(product_client: Client) -> None:
    response = product_client.get("/product/1076963", headers={"X-API-KEY": "testToken"})
    assert response.status_code == 200
    assert response.get_json()["sku"] == 1076963
    assert product_client.get("/product/1076963").status_code == 401


def test_healthz_and_readyz_answer_ok(product_client: Client) -> None:
    for path in ("/healthz", "/readyz"):
        response = product_client.get(path)
        assert response.status_code == 200, path
        assert response.get_json() == {"status": "ok", "function": "get_product"}
        assert response.headers["Content-Type"] == "application/json"


def test_readyz_turns_false_while_draining_and_healthz_stays_true(product_client: Client) -> None:
    lifecycle.begin_shutdown()
    assert product_client.get("/readyz").status_code == 503
    assert product_client.get("/healthz").status_code == 200


def test_other_methods_on_health_paths_reach_the_function(product_client: Client) -> None:
    # the function's own routing answers: /healthz is not its route
    assert product_client.post("/healthz").status_code == 404


def test_every_path_a_wrapper_answers_still_reaches_it_through_the_front(
    product_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FunctionFront sends a function's own paths straight to the observed function: every path one of the
    wrappers around it answers or rewrites must still get that wrapper's answer."""
    for path in ("/healthz", "/readyz", "/_/health", "/_/ready"):
        assert product_client.get(path).get_json()["status"] == "ok", path
    assert product_client.get("/openapi.json").get_json()["openapi"].startswith("3.")
    assert product_client.get("/openapi.yaml").headers["Content-Type"] == "application/yaml"
    assert b"swagger" in product_client.get("/docs").data.lower()
    assert product_client.get("/docs/static/swagger-ui.css").status_code == 200
    assert product_client.get("/docs/static/nothing.css").get_json()["code"] == 5
    assert product_client.get("/metrics").headers["Content-Type"].startswith("text/plain")
    # a control character: escaped, so the function's own routing answers in JSON (Flask's would be HTML)
    escaped = product_client.get("/product/10%0A76963", headers={"X-API-KEY": "testToken"})
    assert escaped.status_code in (400, 404) and escaped.get_json()["code"] in (3, 5)
    # the root rewritten to the function's path (FUNCTION_ROOT_PATH, the cron-connector's call)
    monkeypatch.setenv("FUNCTION_ROOT_PATH", "/product/1076963")
    rooted = Client(entrypoint.function_app("get_product"))
    answer = rooted.get("/", headers={"X-API-KEY": "testToken"})
    assert answer.status_code == 200 and answer.get_json()["sku"] == 1076963


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ValueError, match="no function"):
        entrypoint.function_app("no_such_function")
    with pytest.raises(SystemExit):
        entrypoint.main(["--target", "no_such_function"])


def test_every_http_function_of_the_table_builds_an_app() -> None:
    for function in table.FUNCTIONS:
        if function.service in ("product", "cart") and function.trigger == "http":
            assert callable(entrypoint.function_app(function.name))


def test_worker_exit_runs_the_shutdown_hooks_last_registered_first() -> None:
    ran: list[str] = []
    lifecycle.on_shutdown(lambda: ran.append("pool"))
    lifecycle.on_shutdown(lambda: ran.append("producer"))
    entrypoint.worker_exit(None, None)
    assert ran == ["producer", "pool"]
    assert lifecycle.shutting_down()
    entrypoint.worker_exit(None, None)  # hooks run once
    assert ran == ["producer", "pool"]


def test_a_failing_hook_does_not_stop_the_others() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("close failed")

    lifecycle.on_shutdown(lambda: ran.append("pool"))
    lifecycle.on_shutdown(broken)
    errors = lifecycle.run_shutdown_hooks()
    assert ran == ["pool"]
    assert [str(e) for e in errors] == ["close failed"]


def test_on_shutdown_works_as_a_decorator() -> None:
    ran: list[str] = []

    @lifecycle.on_shutdown
    def close() -> None:
        ran.append("closed")

    lifecycle.run_shutdown_hooks()
    assert ran == ["closed"]
    assert callable(close)


# --- every answer a JSON error: CloudEvent edges, HEAD, body limits, gunicorn's own refusals --------------

CE_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "/loms",
    "ce-type": "loms.order.status-changed",
    "Content-Type": "application/json",
}
STATUS_CHANGE = b'{"order_id": 1, "user_id": 31337, "status": "new", "moment": "2026-11-22T08:00:00Z"}'


def assert_json_error(response: Any, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"code", "message", "details"}
    assert (body["code"], body["details"]) == (code, [])
    return body


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    from functions.notifier import bootstrap

    fake = Notifier()
    fake.bootstrap()
    yield fake
    bootstrap.reset()


@pytest.fixture(scope="module")
def notify_client() -> Client:
    return Client(entrypoint.function_app("notify_status"))


@pytest.mark.parametrize("target", [f.name for f in table.FUNCTIONS if f.trigger == "cloudevent"])
def test_a_cloudevent_endpoint_answers_a_request_that_is_no_cloudevent_in_json(
    target: str, notify_client: Client, notifier: Notifier
) -> None:
    client = notify_client if target == "notify_status" else Client(entrypoint.function_app(target))
    path = table.BY_NAME[target].path
    assert_json_error(client.post(path, data=b"hello", headers={"Content-Type": "text/plain"}), 415, 3)
    secret = b'{"password": "hunter2"}'
    body = assert_json_error(
        client.post(path, data=secret, headers={"Content-Type": "application/json"}), 400, 3
    )
    assert "hunter2" not in body["message"]  # functions-framework's page echoed the request's data
    wrong_method = client.get(path)
    assert_json_error(wrong_method, 405, 3)
    assert wrong_method.headers["Allow"] == "POST"
    assert notifier.db.claimed == {}


def test_a_cloudevent_body_over_the_limit_is_a_json_413_and_nothing_is_stored(
    notify_client: Client, notifier: Notifier
) -> None:
    path = table.BY_NAME["notify_status"].path
    big = STATUS_CHANGE[:-1] + b', "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    body = assert_json_error(notify_client.post(path, data=big, headers=CE_HEADERS), 413, 3)
    assert body["message"] == f"request body is over {1024 * 1024} bytes"
    assert notifier.db.claimed == {}
    assert notify_client.post(path, data=STATUS_CHANGE, headers=CE_HEADERS).status_code == 200
    assert notifier.sink.events() == [1]


def test_the_body_limit_is_configured_by_max_request_body_bytes(
    monkeypatch: pytest.MonkeyPatch, notifier: Notifier
) -> None:
    monkeypatch.setenv("MAX_REQUEST_BODY_BYTES", str(len(STATUS_CHANGE) - 1))
    client = Client(entrypoint.function_app("notify_status"))
    path = table.BY_NAME["notify_status"].path
    assert_json_error(client.post(path, data=STATUS_CHANGE, headers=CE_HEADERS), 413, 3)
    monkeypatch.setenv("MAX_REQUEST_BODY_BYTES", str(len(STATUS_CHANGE)))
    client = Client(entrypoint.function_app("notify_status"))
    assert client.post(path, data=STATUS_CHANGE, headers=CE_HEADERS).status_code == 200


def test_head_on_a_get_function_answers_as_the_get_without_a_body(product_client: Client) -> None:
    key = {"X-API-KEY": "testToken"}
    got = product_client.get("/product/1076963", headers=key)
    head = product_client.head("/product/1076963", headers=key)
    assert (head.status_code, head.get_data()) == (200, b"")
    assert head.headers["Content-Length"] == got.headers["Content-Length"]
    assert product_client.head("/product/1076963").status_code == 401


def test_functions_frameworks_own_pages_are_json_too(product_client: Client) -> None:
    for path in ("/robots.txt", "/favicon.ico"):
        assert_json_error(product_client.get(path), 404, 5)


# gunicorn's refusals, before any app runs ------------------------------------------------------------------


def read_response(sock: socket.socket, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LimitRequestHeaders("limit request headers fields size"), 431),
        (LimitRequestLine(9000, 8190), 414),
        (InvalidHeaderName("<bad>"), 400),
        (InvalidRequestLine("GARBAGE <script>"), 400),
    ],
    ids=["431", "414", "400-header", "400-line"],
)
@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])  # gunicorn's parser (gevent_pywsgi: pywsgi's)
def test_the_worker_answers_gunicorns_refusals_in_json(
    error: Exception, status: int, worker_class: str
) -> None:
    """Breaks when gunicorn changes how Worker.handle_error writes its page (see JsonErrorPages), under
    either worker class."""
    cfg = gunicorn.config.Config()
    worker_type: Any = entrypoint.worker_class(worker_class, draining=True)
    assert issubclass(worker_type, entrypoint.JsonErrorPages)
    worker = worker_type(0, os.getpid(), [], None, 30, cfg, gunicorn.glogging.Logger(cfg))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker.handle_error(None, ours, ("127.0.0.1", 1), error)
        ours.shutdown(socket.SHUT_WR)
        got, headers, body = read_response(theirs)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    payload = json.loads(body)
    assert payload == {"code": 3, "message": payload["message"], "details": []}
    assert "<" not in payload["message"]
    if status == 431:
        assert "100 header fields" in payload["message"] and "8190 bytes" in payload["message"]


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        return read_response(sock, request.split(b" ", 1)[0].decode())


@pytest.mark.parametrize(
    "command",
    [
        [
            "-m",
            "functions.entrypoint",
            "--target",
            "get_product",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ],
        ["-m", "functions.devserver", "serve", "--service", "product", "--threads", "2"],
    ],
    ids=["container", "devserver"],
)
@pytest.mark.parametrize("worker_class", entrypoint.WORKER_CLASSES)
def test_the_served_function_answers_oversized_headers_with_a_json_431(
    command: list[str], worker_class: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(entrypoint.ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "SHOP_WORKER_CLASS": worker_class,
    }
    process = subprocess.Popen(
        [sys.executable, *command, "--port", str(port)],
        env=env,
        cwd=entrypoint.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def healthy() -> bool:
            assert process.poll() is None, "the server exited"
            try:
                return raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=60, what="the server answers /healthz")
        big = b"GET /product/1076963 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        many = (
            b"GET /product/1076963 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
        )
        for request in (big, many):
            status, headers, body = raw_exchange(port, request)
            assert status == 431
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["code"] == 3
        status, headers, body = raw_exchange(port, b"GET /product/1076963 HTTP/1.1\r\nBad Header: 1\r\n\r\n")
        assert (status, headers["content-type"], json.loads(body)["code"]) == (400, "application/json", 3)
        ok = raw_exchange(port, b"GET /product/1076963 HTTP/1.1\r\nHost: x\r\nX-API-KEY: testToken\r\n\r\n")
        assert ok[0] == 200
        head = raw_exchange(
            port, b"HEAD /product/1076963 HTTP/1.1\r\nHost: x\r\nX-API-KEY: testToken\r\n\r\n"
        )
        assert head[0] == 200
    finally:
        process.terminate()
        process.wait(30)


def test_the_dev_servers_dispatcher_answers_head_as_get() -> None:
    from functions import devserver

    client = Client(devserver.service_app("product"))
    head = client.head("/product/1076963", headers={"X-API-KEY": "testToken"})
    assert (head.status_code, head.get_data()) == (200, b"")
    assert client.post("/product/1076963").status_code == 405
