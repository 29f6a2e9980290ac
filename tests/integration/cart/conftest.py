"""The cart's integration fixtures: the real loms functions in a child process, on a fresh database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from functions.devserver import wait_healthy
from shared_lib.devtools.ports import free_port
from tests.conftest import ROOT, MakeDatabase

BOOK, PEN = 1076963, 1148162
LOMS_SEED = [{"sku": BOOK, "total_count": 300, "reserved": 35}, {"sku": PEN, "total_count": 5, "reserved": 0}]


@pytest.fixture(scope="module")
def loms_url(make_database: MakeDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of loms serving a fresh database seeded with LOMS_SEED (one per test module)."""
    seed = tmp_path_factory.mktemp("loms") / "stock.json"
    seed.write_text(json.dumps(LOMS_SEED))
    env = {
        **os.environ,
        "LOMS_SHARD_DSNS": make_database("loms"),
        "LOMS_STOCK_SEED_PATH": str(seed),
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run(
        [sys.executable, "-c", "from functions.loms import bootstrap; bootstrap.seed_stock()"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.devserver", "serve", "--service", "loms", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/healthz", 30, process)
        yield url
    finally:
        process.terminate()
        process.wait(10)
