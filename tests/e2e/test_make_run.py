"""`make run`'s entry point as a user meets it: starts, serves, stops on Ctrl-C, keeps data across restarts.

Runs beside the session's stack with every port shifted, and its own PostgreSQL data directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from functions.devserver import ROOT, wait_healthy
from tests.conftest import free_port
from tests.e2e.http import call, notifications
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

OFFSET = 1000


def start(data: Path, pg_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions.devserver",
            "run",
            "--data",
            str(data),
            "--pg-port",
            str(pg_port),
            "--port-offset",
            str(OFFSET),
            "--embedded",  # the fallback path: in-process event delivery and caches
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_healthy(f"http://127.0.0.1:{8080 + OFFSET}/healthz", 90, process)
    wait_healthy(f"http://127.0.0.1:{8084 + OFFSET}/healthz", 30, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(30)


def test_run_serves_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    data, pg_port = tmp_path / "pg", free_port()
    cart, loms = f"http://127.0.0.1:{8080 + OFFSET}", f"http://127.0.0.1:{8084 + OFFSET}"
    process = start(data, pg_port, tmp_path / "run1.log")
    try:
        assert call("POST", f"{cart}/user/31337/cart/1076963", {"count": 2})[0] == 200
        stock = call("GET", f"{loms}/stock/info?sku=1076963")[1]["count"]
        assert stock == 300 - 35  # the seed: total 300, reserved 35
        # events without Kafka: the relay delivers straight to notify_status, still in order
        order = call(
            "POST", f"{loms}/order/create", {"userId": 777, "items": [{"sku": 1148162, "count": 1}]}
        )[1]
        assert call("POST", f"{loms}/order/pay", {"orderId": order["orderId"]})[0] == 200
        notifier = f"http://127.0.0.1:{8085 + OFFSET}"
        items = wait_for(lambda: (got := notifications(notifier, 777)) and len(got) >= 3 and got)
        assert [i["status"] for i in items] == ["new", "awaiting payment", "paid"]
    finally:
        assert stop(process) == 0
    output = (tmp_path / "run1.log").read_text()
    assert "The shop is up" in output and "curl" in output and "Stopped." in output
    time.sleep(0.5)
    assert "Kafka: not used (SHOP_EMBEDDED is set)" in output
    for port in (8080, 8082, 8084, 8085):
        with pytest.raises(OSError):
            wait_healthy(f"http://127.0.0.1:{port + OFFSET}/healthz", 0.5)

    process = start(data, pg_port, tmp_path / "run2.log")  # data survives a restart of make run
    try:
        status, body, _ = call("GET", f"{cart}/user/31337/cart")
        assert status == 200
        assert body["items"][0]["count"] == 2
    finally:
        assert stop(process) == 0
