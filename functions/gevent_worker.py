"""gunicorn's gevent worker as the shop serves its functions under SHOP_WORKER_CLASS=gevent.

One greenlet per connection: it reads a request, runs the app and reads the next request of the keep-alive
connection, all on itself. gthread instead hands every keep-alive connection from its poller thread to a pool
thread and back for each request (a GIL switch each way): ~70% of the bare floor's CPU per request. gunicorn's
gevent worker patches the standard library (monkey.patch_all) in the worker process before the app is built,
so what the functions use cooperates: sockets (pg8000, pymemcache, kafka-python, urllib), threading (the
cart's ThreadPoolExecutor, OpenTelemetry's BatchSpanProcessor, kafka-python's sender become greenlets), locks,
queues and time.sleep.

What this worker adds to gunicorn's (public subclass hooks only):
- at most `threads` (GUNICORN_THREADS) requests run at once, as in gthread: the rest wait their turn, so a
  pod's concurrency is what the platform was told (containerConcurrency), whatever connections it holds
  (worker_connections bounds those);
- on SIGTERM (graceful stop) it closes its idle keep-alive connections, as gthread drops them: gevent's worker
  otherwise waits for each to time out (keepalive, 30 s), as long as the graceful timeout itself, and the
  arbiter's SIGKILL would then beat the worker_exit hooks (pool close, producer flush). Requests in flight
  are answered first, with Connection: close;
- gunicorn's own refusals answered in JSON, and /readyz false from SIGTERM on (functions.entrypoint's
  JsonErrorPages and Draining mixins).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from gunicorn.workers.ggevent import GeventWorker

from functions.entrypoint import Draining, JsonErrorPages

# A connection that starts waiting for a request after SIGTERM waits this long at most (keepalive otherwise)
DRAINING_WAIT_SECONDS = 1.0


class ShopGeventWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with gthread's request limit and its prompt graceful stop (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[Any] = set()  # open client sockets
        self.busy: set[Any] = set()  # those with a request being read past its head, waiting or answered
        self.at_once: BoundedSemaphore | None = None

    def run(self) -> None:
        self.at_once = BoundedSemaphore(max(1, self.cfg.threads))  # made in the worker, on its own hub
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self.connections.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections.discard(client)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        self.busy.add(sock)
        try:
            assert self.at_once is not None
            with self.at_once:
                return bool(super().handle_request(listener_name, req, sock, addr))
        finally:
            self.busy.discard(sock)

    def timeout_ctx(self) -> gevent.Timeout:
        """How long a keep-alive connection waits for its next request: keepalive, a moment once stopping."""
        return gevent.Timeout(self.cfg.keepalive if self.alive else DRAINING_WAIT_SECONDS, False)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)  # stops accepting; the requests in flight go on
        for client in list(self.connections - self.busy):  # idle: waiting for a request that may never come
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # its greenlet reads the end and closes it


class JsonErrorGeventWorker(JsonErrorPages, ShopGeventWorker):
    """The gevent worker answering gunicorn's own refusals in JSON (the dev server's worker)."""


class DrainingGeventWorker(Draining, JsonErrorGeventWorker):
    """The gevent worker that also turns /readyz false the moment SIGTERM arrives (the container's)."""
