"""Test tooling shared by every suite: a real PostgreSQL started for the session and fresh databases.

The server is started once per pytest session (throwaway data directory, fsync off) and stopped at the end.
Set TEST_PG_DSN to use an already running server instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared_lib.devtools.pg_server import PgServer
from shared_lib.devtools.ports import free_port
from shared_lib.postgres import Dsn, ensure_database, migrate

# Session fixtures for the other real components live in their own plugin modules.
pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.memcached"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """The DSN of the session's PostgreSQL server (maintenance database `postgres`)."""
    existing = os.environ.get("TEST_PG_DSN")
    if existing:
        yield existing
        return
    data_dir = Path(tempfile.mkdtemp(prefix="shop-test-pg-"))
    server = PgServer(data_dir / "data", free_port(), fast_unsafe=True)
    server.start()
    try:
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)  # ~1 GB after a full run: every `make test` made another


MakeDatabase = Callable[[str], str]


@pytest.fixture(scope="session")
def make_database(pg_server_dsn: str) -> MakeDatabase:
    """make_database(service) -> DSN of a new, uniquely named database with that service's migrations."""

    def make(service: str) -> str:
        name = f"{service}_{uuid.uuid4().hex[:10]}"
        ensure_database(pg_server_dsn, name)
        dsn = Dsn.parse(pg_server_dsn).with_database(name).url()
        migrate(dsn, [ROOT / "sql" / "shared", ROOT / "sql" / service])
        return dsn

    return make


_ids = iter(range(10**6))


@pytest.fixture
def unique_id() -> Callable[[], int]:
    """Fresh positive ids per test (user ids, SKUs, …) so tests never need to truncate tables."""
    base = (uuid.uuid4().int % 10**12) * 1000 + 1

    def next_id() -> int:
        return base + next(_ids)

    return next_id


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--function", default=None, help="run only the tests of one function (a table name)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "function(name): the test exercises that function of the table")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--function F keeps the tests marked function("F") and those whose name mentions F."""
    wanted = config.getoption("--function")
    if not wanted:
        return
    from functions.table import BY_NAME

    if wanted not in BY_NAME:
        raise pytest.UsageError(f"no function {wanted!r} in functions/table.py")
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marked = {m.args[0] for m in item.iter_markers("function") if m.args}
        (keep if wanted in marked or wanted in item.nodeid else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.fixture(scope="session")
def shop(
    pg_server_dsn: str, kafka_bootstrap: str, memcached_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The whole dev server on free ports (the contract's, shifted), on the session's PostgreSQL, Kafka and
    Memcached: {service: base URL}.

    Started the way `make run` starts it (same databases, migrations, seed, processes, relay and event
    sources); each port proven to be held by the service process started here (tests.fixtures.stack). Logs go
    to the session's temporary directory and are printed when a service fails to start.
    """
    from functions import devserver, table
    from tests.fixtures.stack import start_stacks

    def environment(offset: int) -> dict[str, str]:
        return devserver.service_environment(
            pg_server_dsn, port_offset=offset, kafka=kafka_bootstrap, memcached=memcached_address
        )

    devserver.prepare_databases(pg_server_dsn, environment(0))
    log_dir = tmp_path_factory.mktemp("shop-logs")
    try:
        _, (stack,) = start_stacks(
            lambda offset: [
                devserver.Stack(environment(offset), log_dir=log_dir, cron_seconds=2.0, port_offset=offset)
            ],
            table.SERVICES,
        )
    except Exception:
        for log_file in log_dir.glob("*.log"):
            print(f"--- {log_file.name}\n{log_file.read_text()[-3000:]}")
        raise
    try:
        yield {name: f"http://127.0.0.1:{stack.port(name)}" for name in table.SERVICES}
    finally:
        stack.stop()
