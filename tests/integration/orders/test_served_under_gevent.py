"""get_order served as the container serves it (functions.entrypoint, gunicorn's gevent_pywsgi worker, the
default), traced to an OTLP endpoint that never answers, on real PostgreSQL and Memcached: the worker's hub
stays live. One greenlet blocking it stops every request of the worker and its heartbeat, until gunicorn
kills it (WORKER TIMEOUT, 30 s) and starts another that may hang the same way.

- The first burst of concurrent traced requests is all answered: the trace backend is built on the first
  span, and that build (which starts the span processor's thread, a yield under gevent) once held a lock
  that the arbiter had made before the worker patched threading; a second request blocked the hub on it.
- With Memcached stopped (SIGSTOP: connections open, nothing answered) requests are answered from the
  database and /healthz answers meanwhile; after SIGCONT the cache serves again.

Every wait is bounded; nothing is timed. The served process's log must have no WORKER TIMEOUT.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from functions import entrypoint
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.ports import free_ports
from tests.conftest import MakeDatabase
from tests.polling import wait_for
from tests.processes import stop

# a client's bound on one answer: far above any answer here (the OTLP export's own timeout is 5 s, the
# cache's 0.2 s), and above gunicorn's 30 s heartbeat timeout, which then shows a hung worker as a reset
ANSWER_BOUND_SECONDS = 90.0
BURST = 8


@dataclass
class Served:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> tuple[int, dict[str, object]]:
        """(status, JSON body) of GET `path`; an exception if no HTTP answer came (reset, bound reached)."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=ANSWER_BOUND_SECONDS) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def never_answering_otlp() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes connections (the kernel's backlog) and never answers one."""
    (port,) = free_ports(1)
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


@contextlib.contextmanager
def serve_get_order(
    tmp_path: Path, dsn: str, memcached: str, otlp: str, sample_ratio: str
) -> Iterator[Served]:
    (port,) = free_ports(1)
    log = tmp_path / "served.log"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(entrypoint.ROOT),
        "SHOP_WORKER_CLASS": "gevent_pywsgi",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
        "SHOP_TRACE_SAMPLE_RATIO": sample_ratio,
        "ORDERS_DATABASE_URL": dsn,
        "ORDERS_MEMCACHED": memcached,
        "ORDERS_LOCAL_CACHE_ENTRIES": "0",  # every read goes to Memcached
    }
    command = [sys.executable, "-m", "functions.entrypoint", "--target", "get_order"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", "16"],
            env=env,
            cwd=entrypoint.ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(port, process, log)
    try:

        def healthy() -> bool:
            assert process.poll() is None, f"the server exited:\n{served.log_text()}"
            try:
                return served.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=60, interval=0.1, what="the served get_order answers /healthz")
        yield served
    finally:
        stop(process)
    assert "WORKER TIMEOUT" not in served.log_text(), served.log_text()


def answers_at_once(served: Served, paths: list[str]) -> list[object]:
    """GET every path on its own connection: all connected first, then every request sent, then each answer
    read, so the worker finds them ready together. Each answer's status, or the exception that came instead
    (a hung worker: the bound reached, or the connection reset when gunicorn killed it)."""
    connections = [
        http.client.HTTPConnection("127.0.0.1", served.port, timeout=ANSWER_BOUND_SECONDS) for _ in paths
    ]
    results: list[object] = []
    try:
        for connection in connections:
            connection.connect()
        for connection, path in zip(connections, paths, strict=True):
            connection.request("GET", path, headers={"Connection": "close"})
        for connection in connections:
            try:
                response = connection.getresponse()
                response.read()
                results.append(response.status)
            except (OSError, http.client.HTTPException) as error:
                results.append(error)
    finally:
        for connection in connections:
            connection.close()
    return results


def unknown_orders(count: int) -> list[str]:
    return [f"/order/{uuid.uuid4()}" for _ in range(count)]


@pytest.mark.parametrize("sample_ratio", ["0.1", "1.0"])
def test_the_first_burst_of_traced_requests_is_answered(
    make_database: MakeDatabase,
    memcached_address: str,
    never_answering_otlp: str,
    tmp_path: Path,
    sample_ratio: str,
) -> None:
    dsn = make_database("orders")
    with serve_get_order(tmp_path, dsn, memcached_address, never_answering_otlp, sample_ratio) as served:
        # the worker's first requests: the first span of the first builds the trace backend
        assert answers_at_once(served, unknown_orders(BURST)) == [404] * BURST
        assert served.get("/healthz")[0] == 200
        # and again, the sampled ones now exported to the endpoint that never answers
        assert answers_at_once(served, unknown_orders(BURST)) == [404] * BURST


def test_a_stopped_memcached_leaves_the_worker_live(
    make_database: MakeDatabase,
    memcached_server: MemcachedServer,
    never_answering_otlp: str,
    tmp_path: Path,
) -> None:
    memcached_server.start()  # running (another test may have stopped it)
    memcached = memcached_server.process
    assert memcached is not None
    dsn = make_database("orders")
    with serve_get_order(tmp_path, dsn, memcached_server.address, never_answering_otlp, "1.0") as served:
        assert answers_at_once(served, unknown_orders(BURST)) == [404] * BURST  # Memcached up
        os.kill(memcached.pid, signal.SIGSTOP)
        try:
            # the cache's reads time out (its 0.2 s), the database answers; /healthz answers beside them
            outcome = answers_at_once(served, [*unknown_orders(BURST), "/healthz"])
            assert outcome == [404] * BURST + [200]
        finally:
            os.kill(memcached.pid, signal.SIGCONT)
        assert answers_at_once(served, unknown_orders(BURST)) == [404] * BURST
        assert served.get("/healthz")[0] == 200
