"""The pool, migrations and the Idempotency-Key store against the session's real PostgreSQL."""

from __future__ import annotations

import contextlib
import ssl
import threading
from pathlib import Path

import pytest
from pg8000.exceptions import DatabaseError

from shared_lib import web
from shared_lib.errors import IdempotencyKeyReusedError, TransientError
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.postgres import (
    ConnectionPool,
    Dsn,
    connect,
    ensure_database,
    is_transient,
    migrate,
    split_sql,
    wait_readable,
)

pytestmark = pytest.mark.integration


def test_migrations_apply_once(pg_server_dsn: str, tmp_path: Path) -> None:
    ensure_database(pg_server_dsn, "migrate_once")
    dsn = Dsn.parse(pg_server_dsn).with_database("migrate_once").url()
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "001_t.sql").write_text("CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n")
    assert migrate(dsn, [folder]) == ["svc/001_t.sql"]
    assert migrate(dsn, [folder]) == []
    (folder / "002_bad.sql").write_text("INSERT INTO t VALUES (2);\nSELECT broken syntax here;\n")
    with pytest.raises(Exception, match="syntax"):
        migrate(dsn, [folder])
    assert ConnectionPool(dsn).run("SELECT count(*) FROM t") == [[1]]  # the failed file left nothing behind


def test_split_keeps_function_bodies_whole() -> None:
    text = (
        "CREATE FUNCTION f() RETURNS int AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$ LANGUAGE plpgsql;\nSELECT 1;\n"
    )
    assert len(split_sql(text)) == 2


def test_transaction_rolls_back_on_error(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"))
    pool.run("CREATE TABLE IF NOT EXISTS rb (id int)")
    with pytest.raises(ZeroDivisionError), pool.transaction() as conn:
        conn.run("INSERT INTO rb VALUES (1)")
        raise ZeroDivisionError
    assert pool.run("SELECT count(*) FROM rb") == [[0]]


def test_a_connection_builds_no_default_tls_context(
    pg_server_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg8000's default builds a TLS context per connection with ssl.create_default_context(), loading the
    system's CA certificates to verify nothing (~45 ms of CPU each). connect() offers TLS with one context
    made once, and against a server without TLS (this one) goes on in plain text, as pg8000's default does."""

    def refused(*args: object, **kwargs: object) -> ssl.SSLContext:
        raise AssertionError("a default TLS context was built for a connection")

    monkeypatch.setattr(ssl, "create_default_context", refused)
    for _ in range(2):
        conn = connect(Dsn.parse(pg_server_dsn))
        try:
            assert conn.run("SELECT 1") == [[1]]
        finally:
            conn.close()


def test_unreachable_database_is_transient() -> None:
    pool = ConnectionPool("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(TransientError), pool.connection():
        pass


def test_idempotency_runs_the_action_once_under_concurrency(make_database) -> None:  # type: ignore[no-untyped-def]
    store = PgIdempotencyStore(ConnectionPool(make_database("cart"), size=20))
    calls: list[int] = []
    lock = threading.Lock()

    def action() -> web.Reply:
        with lock:
            calls.append(1)
            return web.ok({"n": len(calls)})

    replies: list[web.Reply] = []
    threads = [
        threading.Thread(target=lambda: replies.append(store.run("create", "k1", "fp", action)))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert {r.body["n"] for r in replies} == {1}
    with pytest.raises(IdempotencyKeyReusedError):
        store.run("create", "k1", "other", action)
    assert store.run("other-scope", "k1", "other", action).body == {"n": 2}


def test_server_errors_are_not_remembered(make_database) -> None:  # type: ignore[no-untyped-def]
    store = PgIdempotencyStore(ConnectionPool(make_database("cart")))
    assert store.run("s", "k", "fp", lambda: web.Reply(503, {"code": 14})).status == 503
    assert store.run("s", "k", "fp", lambda: web.ok({})).status == 200


def test_a_transaction_sets_its_isolation(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"), size=1)
    pool.run("CREATE TABLE IF NOT EXISTS tx (id int PRIMARY KEY)")
    with pool.transaction("SERIALIZABLE") as conn:
        assert conn.run("SELECT current_setting(:n)", n="transaction_isolation") == [["serializable"]]
        assert conn.run("SELECT now() = statement_timestamp() AS same WHERE :x = 1", x=1) == [[False]]
    with pytest.raises(ZeroDivisionError), pool.transaction() as conn:
        conn.run("INSERT INTO tx VALUES (:i)", i=1)
        conn.run("INSERT INTO tx VALUES (:i)", i=2)
        raise ZeroDivisionError
    assert pool.run("SELECT count(*) FROM tx") == [[0]]


def test_a_failed_first_statement_rolls_back_and_leaves_the_connection_usable(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"), size=1)
    pool.run("CREATE TABLE IF NOT EXISTS tx (id int PRIMARY KEY)")
    pool.run("INSERT INTO tx VALUES (:i)", i=1)
    with pytest.raises(DatabaseError), pool.transaction() as conn:
        conn.run("INSERT INTO tx VALUES (:i)", i=1)  # duplicate key
    with pool.transaction() as conn:  # the same (only) connection: out of the failed transaction
        conn.run("INSERT INTO tx VALUES (:i)", i=2)
    assert pool.run("SELECT id FROM tx ORDER BY id") == [[1], [2]]


def test_a_begin_that_fails_runs_nothing_of_its_transaction(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"), size=1)
    pool.run("CREATE TABLE IF NOT EXISTS tx (id int PRIMARY KEY)")
    with pytest.raises(DatabaseError), pool.transaction("NONSENSE") as conn:
        conn.run("INSERT INTO tx VALUES (:i)", i=1)  # must not run outside a transaction
    assert pool.run("SELECT count(*) FROM tx") == [[0]]


def test_transactions_that_run_nothing_or_start_without_parameters_still_hold(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"), size=1)
    pool.run("CREATE TABLE IF NOT EXISTS tx (id int PRIMARY KEY)")
    with pool.transaction():
        pass
    with pytest.raises(ZeroDivisionError), pool.transaction() as conn:
        conn.run("INSERT INTO tx VALUES (7)")  # no parameters: pg8000's simple query
        conn.run("SAVEPOINT s")
        conn.run("INSERT INTO tx VALUES (:i)", i=8)
        raise ZeroDivisionError
    assert pool.run("SELECT count(*) FROM tx") == [[0]]
    with pool.connection() as conn:
        assert conn.run("SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() AND :x = 1", x=1)
        assert conn.run("SELECT current_setting('transaction_isolation')") == [["read committed"]]


def test_prepared_statements_keep_row_counts_and_survive_a_table_change(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"), size=1)
    pool.run("CREATE TABLE IF NOT EXISTS pt (id int PRIMARY KEY, n int)")
    pool.run("INSERT INTO pt SELECT g, 0 FROM generate_series(1, 5) g")
    with pool.connection() as conn:
        conn.run("UPDATE pt SET n = n + 1 WHERE id <= :i", i=3)
        assert conn.row_count == 3
        for _ in range(2):  # prepared from its second run on
            assert conn.run("SELECT * FROM pt WHERE id = :i", i=1) == [[1, 1]]
        conn.run("ALTER TABLE pt ADD COLUMN label text DEFAULT 'x'")
        with pytest.raises(DatabaseError):  # "cached plan must not change result type": this call fails …
            conn.run("SELECT * FROM pt WHERE id = :i", i=1)
        assert conn.run("SELECT * FROM pt WHERE id = :i", i=1) == [
            [1, 1, "x"]
        ]  # … and the next prepares anew


def test_row_counts_hold_on_every_run_of_a_statement_with_or_without_rows(make_database) -> None:  # type: ignore[no-untyped-def]
    # the first run of a text goes through pg8000's run, later ones prepared (rows) or not (no rows)
    pool = ConnectionPool(make_database("cart"), size=1)
    pool.run("CREATE TABLE IF NOT EXISTS rc (id int PRIMARY KEY, n int)")
    pool.run("INSERT INTO rc SELECT g, 0 FROM generate_series(1, 9) g")
    with pool.connection() as conn:
        for limit in (2, 5, 7, 1):
            assert conn.run("UPDATE rc SET n = n + 1 WHERE id <= :i", i=limit) is None
            assert conn.row_count == limit
            rows = conn.run("UPDATE rc SET n = n + 1 WHERE id <= :i RETURNING id", i=limit)
            assert len(rows) == limit and conn.row_count == limit
            assert [c["name"] for c in conn.columns] == ["id"]
            assert len(conn.run("SELECT id, n FROM rc WHERE id <= :i", i=limit)) == conn.row_count == limit
            assert [c["name"] for c in conn.columns] == ["id", "n"]
        conn.run("DELETE FROM rc WHERE id > :i", i=100)
        assert conn.row_count == 0


def test_a_notify_makes_the_listening_connection_readable(make_database) -> None:  # type: ignore[no-untyped-def]
    # Guards shared_lib.postgres.wait_readable: it waits on the socket handed to pg8000 (`sock`), the one
    # thing pg8000 has no public API for. A pg8000 that stops reading through that socket fails this test.
    dsn = make_database("cart")
    listener = connect(Dsn.parse(dsn))
    try:
        listener.run("LISTEN shop_test")
        assert wait_readable({"a": listener}, 0) == []  # nothing sent: nothing to read
        ConnectionPool(dsn, size=1).run("SELECT pg_notify('shop_test', :p)", p="hello")
        assert wait_readable({"a": listener}, 60) == ["a"]  # bounded: a missed NOTIFY returns [] at 60 s
        listener.run("SELECT 1")
        assert [(channel, payload) for _pid, channel, payload in listener.notifications] == [
            ("shop_test", "hello")
        ]
    finally:
        listener.close()


def test_the_pool_lends_at_most_size_connections_and_a_waiter_gets_one_given_back(make_database) -> None:  # type: ignore[no-untyped-def]
    pool = ConnectionPool(make_database("cart"), size=2, acquire_timeout=0.2)
    pid = "SELECT pg_backend_pid() WHERE :x = 1"
    with pool.connection() as first, pool.connection() as second:
        lent = {first.run(pid, x=1)[0][0], second.run(pid, x=1)[0][0]}
        with pytest.raises(TransientError, match="exhausted"):
            pool.run(pid, x=1)
        with pytest.raises(TransientError, match="exhausted"), pool.connection():
            pass
        pool.acquire_timeout = 60
        seen: list[int] = []
        waiter = threading.Thread(target=lambda: seen.append(pool.run(pid, x=1)[0][0]))
        waiter.start()
        assert not seen  # both lent: it waits
    waiter.join(60)
    assert len(seen) == 1 and seen[0] in lent  # a connection given back, no third one opened
    assert {pool.run(pid, x=1)[0][0] for _ in range(4)} <= lent


@pytest.mark.parametrize("through", ["run", "connection"])
def test_a_failed_statement_gives_its_slot_back_and_a_broken_connection_is_replaced(  # type: ignore[no-untyped-def]
    make_database, through: str
) -> None:
    pool = ConnectionPool(make_database("cart"), size=1, acquire_timeout=5)

    def run(sql: str) -> list[list[object]]:
        if through == "run":
            return pool.run(sql, x=1)
        with pool.connection() as conn:
            rows: list[list[object]] = conn.run(sql, x=1)
            return rows

    pid = "SELECT pg_backend_pid() WHERE :x = 1"
    before = run(pid)[0][0]
    with pytest.raises(DatabaseError, match="22012"):  # division by zero: not transient
        run("SELECT 1 / (:x - 1)")
    assert run(pid)[0][0] == before  # the one slot is free again, and the connection kept
    with pytest.raises(TransientError):  # the server ends this connection: 57P01
        run("SELECT pg_terminate_backend(pg_backend_pid()) WHERE :x = 1")
    assert run(pid)[0][0] != before  # the broken one was discarded and its slot given back


def test_a_statement_outlasting_the_connection_timeout_fails_as_a_transient_timeout(make_database) -> None:  # type: ignore[no-untyped-def]
    conn = connect(Dsn.parse(make_database("cart")), timeout=0.3)
    try:
        assert conn.run("SELECT 1 WHERE :x = 1", x=1) == [[1]]  # within the bound: answered
        with pytest.raises(OSError) as caught:  # the server answers after 5 s: the read gives up first
            conn.run("SELECT pg_sleep(5)")
        assert isinstance(caught.value, TimeoutError) and is_transient(caught.value)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
