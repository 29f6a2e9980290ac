"""gunicorn's gevent workers as the shop serves its functions: gevent_pywsgi (gevent's own HTTP server, the
default SHOP_WORKER_CLASS; ShopPyWSGIWorker below) and gevent (gunicorn's parser on greenlets).

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
import http.client
import re
import socket
from http import HTTPStatus
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from gunicorn.workers.ggevent import GeventWorker, PyWSGIHandler, PyWSGIServer

from functions.entrypoint import Draining, JsonErrorPages, write_json_error
from shared_lib import web

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


# --- gevent's own WSGI server (SHOP_WORKER_CLASS=gevent_pywsgi) ---------------------------------------------

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token


class Refused(ValueError):
    """A request refused before the app runs (pywsgi answers a ValueError from read_request as a refusal)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ShopPyWSGIHandler(PyWSGIHandler):  # type: ignore[misc]
    """gevent's pywsgi handler as gunicorn's gevent_pywsgi worker runs it, with what the shop's servers keep:
    gunicorn's header limits (limit_request_fields, limit_request_field_size: a 431) and field-name check (a
    400), every refusal answered in the shop's JSON (pywsgi's own 400 and 414 pages included), at most
    `threads` requests at once, keep-alive connections closed after `keepalive` idle seconds, and known to
    the worker so that a stopping worker closes its idle ones. `worker`: set per worker (ShopPyWSGIWorker)."""

    worker: Any = None
    refusal: Refused | None = None

    def handle(self) -> None:
        worker = self.worker
        client = self.socket
        client.settimeout(worker.cfg.keepalive or None)  # an idle keep-alive connection's wait, as gunicorn's
        worker.connections.add(client)
        try:
            super().handle()
        finally:
            worker.connections.discard(client)

    def read_request(self, raw_requestline: str) -> bool:
        cfg = self.worker.cfg
        try:
            ok = bool(super().read_request(raw_requestline))
        except http.client.HTTPException as exc:  # http.client's own limit: more than 100 header fields
            raise self._refuse(431, self._too_large()) from exc
        except ValueError:
            if getattr(getattr(self, "headers", None), "status", "") == "Line too long":  # over 64 KiB
                raise self._refuse(431, self._too_large()) from None
            raise
        fields = list(self.headers.items())
        if len(fields) > cfg.limit_request_fields or any(
            len(name) + len(value) + 2 > cfg.limit_request_field_size for name, value in fields
        ):
            raise self._refuse(431, self._too_large())
        # a line that is no header (a name with a space: http.client stops the headers there, a defect), a
        # name that is no token, or a value folded over lines (obsolete; gunicorn refuses it too)
        if (
            self.headers.defects
            or not all(HEADER_NAME.match(name) for name, _ in fields)
            or any("\n" in value or "\r" in value for _, value in fields)
        ):
            raise self._refuse(400, "bad request: invalid header")
        return ok

    def _too_large(self) -> str:
        cfg = self.worker.cfg
        return (
            f"request header fields too large: at most {cfg.limit_request_fields} header fields of "
            f"{cfg.limit_request_field_size} bytes each"
        )

    def _refuse(self, status: int, message: str) -> Refused:
        self.refusal = Refused(status, message)
        return self.refusal

    def handle_one_request(self) -> Any:
        """pywsgi's documented outcomes: None (close), True (next request) or (status, complete answer) for a
        refused request; the last is written here in the shop's JSON instead of pywsgi's empty page."""
        self.refusal = None
        result = super().handle_one_request()
        if not isinstance(result, tuple):
            return result
        refusal = self.refusal
        status = refusal.status if refusal else int(result[0])
        reason = HTTPStatus(status).phrase
        message = str(refusal) if refusal else reason.lower()
        code = web.GRPC_INTERNAL if status >= 500 else web.GRPC_INVALID_ARGUMENT
        with contextlib.suppress(OSError):
            write_json_error(self.socket, f"{status} {reason}", code, message)
        return (str(status), b"")  # written: pywsgi sends nothing more, logs it and closes

    def handle_one_response(self) -> None:
        worker = self.worker
        client = self.socket
        worker.busy.add(client)
        try:
            with worker.at_once:
                super().handle_one_response()
        finally:
            worker.busy.discard(client)
            if not worker.alive:  # stopping: this answer is the connection's last
                self.close_connection = True


class ShopPyWSGIWorker(ShopGeventWorker):
    """gunicorn's gevent_pywsgi worker (gevent's own HTTP server around the app, where gunicorn's gevent
    worker runs gunicorn's parser) with ShopGeventWorker's request limit and prompt stop."""

    server_class = PyWSGIServer
    wsgi_handler = ShopPyWSGIHandler

    def run(self) -> None:
        handler: type[ShopPyWSGIHandler] = type("Handler", (ShopPyWSGIHandler,), {"worker": self})
        self.wsgi_handler = handler
        super().run()


class DrainingPyWSGIWorker(Draining, ShopPyWSGIWorker):
    """The gevent_pywsgi worker that also turns /readyz false the moment SIGTERM arrives (the container's)."""
