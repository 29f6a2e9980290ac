"""A throwaway shop for benchmarks: its own PostgreSQL and dev-server processes on shifted ports."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port
from functions import devserver
from shared_lib.devtools.pg_server import PgServer

PORT_OFFSET = 2000


@dataclass
class BenchShop:
    pg: PgServer
    environment: dict[str, str]
    stack: devserver.Stack | None

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{devserver.table.SERVICES[service].port + PORT_OFFSET}"


@contextlib.contextmanager
def postgres(durable: bool = True) -> Iterator[PgServer]:
    """A fresh server; durable=True keeps fsync on, as a real deployment would."""
    data = Path(tempfile.mkdtemp(prefix="shop-bench-pg-"))
    server = PgServer(data / "data", free_port(), fast_unsafe=not durable)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def shop(
    services: tuple[str, ...],
    overrides: Mapping[str, str] | None = None,
    workers: int = 1,
    durable: bool = True,
) -> Iterator[BenchShop]:
    with postgres(durable) as pg:
        environment = {**devserver.service_environment(pg.dsn, PORT_OFFSET), **(overrides or {})}
        devserver.prepare_databases(pg.dsn, environment)
        stack = devserver.Stack(
            environment,
            services=services,
            workers=workers,
            port_offset=PORT_OFFSET,
            log_dir=Path(tempfile.mkdtemp(prefix="shop-bench-logs-")),
        )
        saved = dict(os.environ)
        try:
            stack.start()
            yield BenchShop(pg, environment, stack)
        finally:
            stack.stop()
            os.environ.clear()
            os.environ.update(saved)
