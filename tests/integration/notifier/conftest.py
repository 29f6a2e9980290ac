"""The notifier's integration fixtures: a fresh database per module, the real functions-framework apps
configured through NOTIFIER_*, and a recording webhook receiver on a local port."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from werkzeug.wrappers import Request, Response

from functions.notifier import bootstrap
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase
from tests.integration.shared_lib.serving import serve_in_thread

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAIN = "functions/notifier/main.py"


@pytest.fixture(scope="module")
def notifier_dsn(make_database: MakeDatabase) -> str:
    return make_database("notifier")


@pytest.fixture(scope="module")
def notifier_pool(notifier_dsn: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(notifier_dsn, size=20, name="notifier-test")
    yield pool
    pool.close()


@dataclass
class Webhook:
    """A webhook receiver that records every request; `fail_next` answers that many with `fail_status`."""

    url: str = ""
    received: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        request = Request(environ)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response("{}", self.fail_status, content_type="application/json")(
                    environ, start_response
                )
            self.received.append((dict(request.headers), json.loads(request.get_data())))
        return Response("{}", 200, content_type="application/json")(environ, start_response)

    def events(self, order_id: int | None = None) -> list[int]:
        with self.lock:
            return [
                int(body["event_id"])
                for _, body in self.received
                if order_id is None or body["order_id"] == str(order_id)
            ]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    with serve_in_thread(receiver) as url:
        receiver.url = url + "/hooks/orders"
        yield receiver


Apps = Callable[..., dict[str, FlaskClient]]


@pytest.fixture
def notifier_apps(monkeypatch: pytest.MonkeyPatch, notifier_dsn: str) -> Iterator[Apps]:
    """notifier_apps(NOTIFIER_…=value, …) -> {target: test client}, bootstrap built from that environment."""

    def build(**env: str) -> dict[str, FlaskClient]:
        monkeypatch.setenv("NOTIFIER_DATABASE_URL", notifier_dsn)
        monkeypatch.setenv("NOTIFIER_WEBHOOK_BACKOFF_BASE_SECONDS", "0.01")
        monkeypatch.setenv("NOTIFIER_WEBHOOK_BACKOFF_MAX_SECONDS", "0.02")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        bootstrap.reset()  # closes the pool the previous build made: tests do not pile up idle connections
        return {
            target: functions_framework.create_app(target=target, source=MAIN).test_client()
            for target in ("notify_status", "list_notifications")
        }

    yield build
    bootstrap.reset()
