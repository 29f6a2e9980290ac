"""The body limit as the container serves a function (gevent_pywsgi, the default, and gthread): a chunked body
over MAX_REQUEST_BODY_BYTES is a 413 in JSON, one within it reaches the function. shared_lib.web.BodyLimit
reads a body of unknown length only when the request says Transfer-Encoding (a GET without a body is passed
on untouched): this holds only if both servers hand that header to the app, which is what is checked here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from functions import entrypoint
from shared_lib.devtools.ports import free_ports
from tests.polling import wait_for
from tests.processes import stop


def chunked_post(port: int, size: int) -> tuple[int, dict[str, object]]:
    """(status, JSON body) of a POST whose `size`-byte body is sent chunked; the connection then closes."""
    head = (
        "POST /order/0123456789abcdef HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n\r\n"
    )
    body = b"x" * size
    request = head.encode() + f"{size:x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return client.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.mark.parametrize("worker_class", ["gevent_pywsgi", "gthread"])
def test_a_chunked_body_over_the_limit_is_413_under_each_server(worker_class: str, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "PYTHONPATH": str(entrypoint.ROOT),
        "MAX_REQUEST_BODY_BYTES": "10",
        "ORDERS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",  # never reached: POST is refused first
    }
    command = [sys.executable, "-m", "functions.entrypoint", "--target", "get_order", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--threads", "4", "--worker-class", worker_class]
    log = tmp_path / "served.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=entrypoint.ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")
            return healthy(port)

        wait_for(up, timeout=60, interval=0.1, what=f"get_order under {worker_class} answers /healthz")
        assert chunked_post(port, 100) == (
            413,
            {"code": 3, "message": "request body is over 10 bytes", "details": []},
        )
        status, body = chunked_post(port, 5)  # within the limit: the function's own answer (GET only)
        assert (status, body["code"]) == (405, 3)
    finally:
        stop(process)
