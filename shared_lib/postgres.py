"""PostgreSQL access for adapters: a small thread-safe pool of pg8000 connections, transactions, migrations.

pg8000 connections are not thread-safe, so each is lent to one thread at a time. Driver errors that are safe
to retry become TransientError here; nothing above the adapters sees pg8000. Every connection opened here
counts and times its statements by kind and outcome, and makes a span of each when tracing is on.

Only pg8000's documented API is used (`pg8000.native`: Connection.run, row_count, columns, notifications,
prepare and PreparedStatement.run/close, and the `sock` connection argument). A statement with parameters that
returns rows is prepared once per connection (a named server-side statement, kept in a small LRU) after its
first run, and then executed in one round trip: pg8000's `run` re-translates the `:name` placeholders in
Python and sends Parse, Describe and Bind in three round trips on every call. A statement that returns no rows
keeps going through `run`: pg8000's PreparedStatement tells no row count, and callers read `row_count`.
(Behind a transaction-pooling PgBouncer, named statements need its prepared-statement support.)
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import queue
import select
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

import pg8000.native
from pg8000.native import DatabaseError, InterfaceError

from shared_lib.errors import TransientError
from shared_lib.observability import metrics, tracing

log = logging.getLogger(__name__)
K = TypeVar("K")

Connection: TypeAlias = pg8000.native.Connection  # untyped driver: Any to mypy

# SQLSTATE classes and codes that mean "try again": connection, serialization, deadlock, shutdown, too many.
_TRANSIENT_PREFIXES = ("08", "40", "53", "57P")
_TRANSIENT_CODES = {"55P03"}  # lock_not_available


@dataclass(frozen=True, slots=True)
class Dsn:
    user: str
    password: str | None
    host: str
    port: int
    database: str

    @classmethod
    def parse(cls, dsn: str) -> Dsn:
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("a DSN looks like postgresql://user:password@host:port/database")
        return cls(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            database=(parts.path or "/postgres").lstrip("/") or "postgres",
        )

    def with_database(self, database: str) -> Dsn:
        return Dsn(self.user, self.password, self.host, self.port, database)

    def url(self) -> str:
        auth = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}"


def sqlstate(exc: BaseException) -> str:
    if isinstance(exc, DatabaseError) and exc.args and isinstance(exc.args[0], dict):
        return str(exc.args[0].get("C", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (InterfaceError, OSError, TimeoutError)):
        return True
    code = sqlstate(exc)
    return code in _TRANSIENT_CODES or code.startswith(_TRANSIENT_PREFIXES)


_KINDS = ("select", "insert", "update", "delete")
_QUERY_TEXT_LIMIT = 2000


def statement_kind(sql: str) -> str:
    """select, insert, update, delete or other; a WITH statement is the kind of its first data change."""
    head = sql.lstrip()[:6].lower()
    if head.startswith(_KINDS):
        return head
    if head.startswith("with"):
        text = sql.lower()
        found = [(i, kind) for kind in _KINDS[1:] if (i := text.find(kind + " ")) >= 0]
        return min(found)[1] if found else "select"
    return "other"


def _record(kind: str, outcome: str, seconds: float) -> None:
    metrics.DB_QUERIES.labels(kind, outcome).inc()
    metrics.DB_DURATION.labels(kind, outcome).observe(seconds)


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")

_PREPARED_PER_CONNECTION = 256
_CACHED_PLAN_CHANGED = "0A000"  # "cached plan must not change result type": a table changed under it


@dataclass(slots=True)
class _Learnt:
    """What the first run of a statement text told: whether its rows are its row count (SELECT, … RETURNING),
    its result columns, and, from its second run on, its prepared statement."""

    preparable: bool
    columns: Any
    prepared: pg8000.native.PreparedStatement | None = None


class ObservedConnection(pg8000.native.Connection):  # type: ignore[misc]
    """pg8000's native connection; `run` counted and timed by kind and outcome, and a span when tracing;
    statements with parameters that return rows prepared once per connection."""

    shop_database = ""
    shop_host = ""
    shop_port = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shop_socket: socket.socket | None = kwargs.get("sock")
        self._shop_statements: OrderedDict[str, _Learnt] = OrderedDict()
        self._shop_result: tuple[int, Any] | None = None  # (row count, columns) of a prepared run

    @property
    def row_count(self) -> Any:
        """As pg8000's, also after a prepared statement (whose rows are its count)."""
        return super().row_count if self._shop_result is None else self._shop_result[0]

    @property
    def columns(self) -> Any:
        return super().columns if self._shop_result is None else self._shop_result[1]

    def _execute(self, sql: str, stream: Any, types: Any, params: dict[str, Any]) -> Any:
        self._shop_result = None
        if not params or stream is not None or types is not None:  # BEGIN, DDL, COPY…: pg8000 as it is
            return super().run(sql, stream=stream, types=types, **params)
        learnt = self._shop_statements.get(sql)
        if learnt is None:  # the first run: pg8000's own, which tells the row count and the columns
            rows = super().run(sql, **params)
            preparable = rows is not None and super().row_count == len(rows)
            self._shop_statements[sql] = _Learnt(preparable, super().columns)
            if len(self._shop_statements) > _PREPARED_PER_CONNECTION:
                evicted = self._shop_statements.popitem(last=False)[1].prepared
                if evicted is not None:
                    evicted.close()
            return rows
        self._shop_statements.move_to_end(sql)
        if not learnt.preparable:
            return super().run(sql, **params)
        try:
            if learnt.prepared is None:  # before running it: a failure here has changed nothing
                learnt.prepared = self.prepare(sql)
            rows = learnt.prepared.run(**params)
        except DatabaseError as exc:
            if sqlstate(exc) == _CACHED_PLAN_CHANGED:
                del self._shop_statements[sql]  # learnt again on next use; the caller sees this attempt fail
            raise
        self._shop_result = (len(rows), learnt.columns)
        return rows

    def run(self, sql: str, stream: Any = None, types: Any = None, **params: Any) -> Any:
        kind, control = _describe(sql)
        backend = tracing.backend()
        span: tracing.Span = tracing.NOOP_SPAN
        # BEGIN, COMMIT…: counted and timed, no span of their own (the transaction's queries tell its story)
        if not (control or isinstance(backend, tracing.NoopBackend)):
            attributes: dict[str, tracing.Attribute] = {  # few: the SDK cleans each one on every span
                "db.system.name": "postgresql",
                "db.namespace": self.shop_database,
                "db.query.text": sql[:_QUERY_TEXT_LIMIT],  # parameters are never in the text: no values leak
            }
            span = backend.span(f"{kind.upper()} {self.shop_database}", "client", attributes)
        outcome = "error"
        with span:
            started = time.perf_counter()
            try:
                rows = self._execute(sql, stream, types, params)
                outcome = "ok"
                return rows
            finally:
                _record(kind, outcome, time.perf_counter() - started)


@functools.lru_cache(maxsize=2048)
def _describe(sql: str) -> tuple[str, bool]:
    """(kind, whether it is transaction control): once per statement text."""
    words = sql.split(None, 1)
    first = words[0].rstrip(";").upper() if words else ""
    return statement_kind(sql), first.startswith(_TRANSACTION_CONTROL)


def wait_readable(conns: Mapping[K, Connection], timeout: float) -> list[K]:
    """The keys of the connections that have something to read (a NOTIFY, or a broken link) within `timeout`
    seconds; read it with any statement (`SELECT 1`), after which `notifications` holds what came.

    Missing upstream: pg8000 has no public way to wait for a notification (psycopg has Connection.notifies(),
    asyncpg add_listener; pg8000 exposes neither a fileno() nor its socket). So `connect` makes the socket
    itself and hands it to pg8000 through the documented `sock` argument, and this waits on that socket.
    pg8000 reads through a buffer: a notification that arrived in the same read as a reply's end sits there
    unseen by this wait, and then `timeout` is the fallback. tests/integration/shared_lib/test_postgres.py
    fails on a pg8000 that stops using the socket it is given.
    """
    sockets = {conn.shop_socket: key for key, conn in conns.items() if conn.shop_socket is not None}
    if not sockets:
        time.sleep(max(0.0, timeout))
        return []
    try:
        readable, _, _ = select.select(list(sockets), [], [], max(0.0, timeout))
    except (OSError, ValueError):
        readable = list(sockets)  # a socket closed under us: let a statement find out
    return [sockets[sock] for sock in readable]


# pg8000's `ssl_context` says which it is: a context (TLS required), False (none), or None, its default, which
# asks the server for TLS, wraps the socket without verifying the server if it agrees, and goes on in plain
# text if it refuses. That default builds its context per connection with ssl.create_default_context(),
# which loads the system's CA certificates only to verify nothing (CERT_NONE): ~45 ms of CPU per connection
# here, more than the connection's whole handshake. connect() keeps the default's behaviour with one context
# of the same settings made once without loading them, and the plain retry done here: a context makes pg8000
# refuse a server that refuses TLS (with the message below), and the connection is then made again without.
_TLS_REFUSED = "Server refuses SSL"


@functools.cache
def _unverified_tls() -> ssl.SSLContext:
    """The TLS pg8000's default uses (no hostname check, no certificate verification), made once."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(dsn: Dsn, timeout: float = 5.0, application_name: str = "shop") -> Connection:
    """A connection over a socket made here, as pg8000 would make it (wait_readable waits on it): in TLS if
    the server takes it (unverified, as pg8000's default), else in plain text."""
    try:
        return _connect(dsn, timeout, application_name, _unverified_tls())
    except InterfaceError as exc:
        if str(exc) != _TLS_REFUSED:
            raise
    return _connect(dsn, timeout, application_name, False)


def _connect(dsn: Dsn, timeout: float, application_name: str, tls: ssl.SSLContext | bool) -> Connection:
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((dsn.host, dsn.port), timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = ObservedConnection(
            user=dsn.user,
            password=dsn.password,
            database=dsn.database,
            application_name=application_name,
            sock=sock,
            ssl_context=tls,
        )
    except Exception as exc:
        if sock is not None:
            sock.close()
        if str(exc) == _TLS_REFUSED:
            raise
        if is_transient(exc):
            raise TransientError("the database is unavailable") from exc
        raise
    conn.shop_database, conn.shop_host, conn.shop_port = dsn.database, dsn.host, dsn.port
    return conn


class ConnectionPool:
    """At most `size` connections to one database, each lent to one thread at a time."""

    def __init__(self, dsn: str, size: int = 8, acquire_timeout: float = 5.0, name: str = "shop") -> None:
        self.dsn = Dsn.parse(dsn)
        self.size = size
        self.acquire_timeout = acquire_timeout
        self.name = name
        # Last in, first out (the warmest connection); a deque's append and pop are thread-safe and, unlike a
        # queue.Queue's, take no lock and notify no condition.
        self._idle: collections.deque[Connection] = collections.deque()
        # The free slots, a token each, bound and wait: SimpleQueue's get and put are C, where a
        # threading.BoundedSemaphore runs a Condition in Python on both (0.5 against 4.5 us a statement).
        self._slots: queue.SimpleQueue[bool] = queue.SimpleQueue()
        for _ in range(size):
            self._slots.put(True)
        self._closed = False

    def _lend(self) -> Connection:
        """A slot and a connection in it (the warmest idle one, else a new one); give both back with
        `_give_back`."""
        try:
            self._slots.get(timeout=self.acquire_timeout)
        except queue.Empty:
            raise TransientError("the database connection pool is exhausted") from None
        try:
            return self._idle.pop()
        except IndexError:
            pass
        try:
            return connect(self.dsn, application_name=self.name)
        except BaseException:
            self._slots.put(True)
            raise

    def _failed(self, conn: Connection, exc: Exception) -> Connection | None:
        """After `exc` came out of a use of `conn`: the connection to give back, None when it was discarded
        (broken, or left in a failed transaction). A transient error is raised again as TransientError."""
        if is_transient(exc):
            self._discard(conn)
            raise TransientError("the database is unavailable") from exc
        if _in_failed_state(conn):
            self._discard(conn)
            return None
        return conn

    def _give_back(self, conn: Connection | None) -> None:
        if conn is not None:
            if self._closed:
                self._discard(conn)
            else:
                self._idle.append(conn)
        self._slots.put(True)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in autocommit mode; broken connections are discarded, driver errors translated."""
        lent = conn = self._lend()
        try:
            yield lent
        except Exception as exc:
            conn = None  # given back below only if still good (_failed may raise instead)
            conn = self._failed(lent, exc)
            raise
        finally:
            self._give_back(conn)

    @contextlib.contextmanager
    def transaction(self, isolation: str = "READ COMMITTED") -> Iterator[Connection]:
        """BEGIN … COMMIT, ROLLBACK on any error."""
        with self.connection() as conn:
            conn.run(f"BEGIN ISOLATION LEVEL {isolation}")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.run("ROLLBACK")
                raise
            conn.run("COMMIT")

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        """One statement, autocommitted, on a lent connection (`connection`'s handling, without its generator:
        this is every single-statement read's path)."""
        lent = conn = self._lend()
        try:
            return lent.run(sql, **params) or []
        except Exception as exc:
            conn = None
            conn = self._failed(lent, exc)
            raise
        finally:
            self._give_back(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._discard(self._idle.pop())
            except IndexError:
                return

    @staticmethod
    def _discard(conn: Connection) -> None:
        with contextlib.suppress(Exception):
            conn.close()


def _in_failed_state(conn: Connection) -> bool:
    try:
        conn.run("ROLLBACK")
        return False
    except Exception:
        return True


# --- databases and migrations -------------------------------------------------------------------------


def ensure_database(server_dsn: str, database: str) -> None:
    """CREATE DATABASE if it does not exist (connects to the server's maintenance database)."""
    dsn = Dsn.parse(server_dsn).with_database("postgres")
    conn = connect(dsn)
    try:
        exists = conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=database)
        if not exists:
            conn.run(f'CREATE DATABASE "{database}"')
    finally:
        conn.close()


def migrate(dsn: str, directories: Sequence[Path]) -> list[str]:
    """Apply forward-only migrations (NNN_what.sql) in order, each once, each in its own transaction.

    A lock serialises concurrent migrators (several replicas starting at once). Returns what was applied.
    """
    conn = connect(Dsn.parse(dsn))
    applied: list[str] = []
    try:
        conn.run("SELECT pg_advisory_lock(7243991)")
        conn.run(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.run("SELECT name FROM schema_migrations")}
        for directory in directories:
            for path in sorted(directory.glob("*.sql")):
                name = f"{directory.name}/{path.name}"
                if name in done:
                    continue
                conn.run("BEGIN")
                try:
                    for statement in split_sql(path.read_text()):
                        conn.run(statement)
                    conn.run("INSERT INTO schema_migrations (name) VALUES (:n)", n=name)
                    conn.run("COMMIT")
                except Exception:
                    conn.run("ROLLBACK")
                    raise
                applied.append(name)
                log.info("applied migration %s", name)
        conn.run("SELECT pg_advisory_unlock(7243991)")
    finally:
        conn.close()
    return applied


def split_sql(text: str) -> list[str]:
    """Split a migration into statements on `;` at line ends, outside $$ bodies."""
    statements, current, in_body = [], [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") and not in_body:
            continue
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_body = not in_body
        if stripped.endswith(";") and not in_body:
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements
