"""The pool, migrations and the Idempotency-Key store against the session's real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared_lib import web
from shared_lib.errors import IdempotencyKeyReusedError, TransientError
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.postgres import ConnectionPool, Dsn, ensure_database, migrate, split_sql

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
