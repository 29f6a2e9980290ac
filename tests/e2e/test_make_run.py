"""`make run`'s entry point as a user meets it: starts, serves, stops on Ctrl-C, keeps data across restarts,
and keeps serving when one of its parts dies (the part is restarted, nothing is lost).

Runs beside the session's stack with every port shifted, and its own PostgreSQL data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions import table
from functions.devserver import ROOT, wait_healthy
from tests.conftest import free_port
from tests.e2e.http import call, notifications
from tests.fixtures.kafka import read_records
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

OFFSET = 1000


def start(
    data: Path,
    pg_port: int,
    log: Path,
    offset: int = OFFSET,
    kafka_port: int | None = None,
    memcached_port: int | None = None,
) -> subprocess.Popen[bytes]:
    """`make run` on shifted ports; with kafka_port (and memcached_port) the real broker and cache, else the
    embedded fallbacks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--data", str(data), "--pg-port", str(pg_port), "--port-offset", str(offset)]
    if kafka_port is None:
        args.append("--embedded")  # the fallback path: in-process event delivery and caches
    else:
        args += ["--kafka-port", str(kafka_port), "--memcached-port", str(memcached_port or free_port())]
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.devserver", "run", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_healthy(f"http://127.0.0.1:{8080 + offset}/healthz", 180, process)
    wait_healthy(f"http://127.0.0.1:{8084 + offset}/healthz", 30, process)
    wait_for(lambda: "The shop is up" in log.read_text(), timeout=60, what="the summary")
    return process


@pytest.fixture
def data_root() -> Iterator[Path]:
    """Where `make run` keeps its data here: under root PostgreSQL runs as another user, who must reach it,
    and pytest's own temporary root is made private again by any other pytest run on the machine."""
    root = Path(tempfile.mkdtemp(prefix="shop-make-run-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(30)


def test_run_serves_stops_cleanly_and_keeps_data(tmp_path: Path, data_root: Path) -> None:
    data, pg_port = data_root / "pg", free_port()
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
        # the README's and the order page's sample order is there
        sample = call("GET", f"http://127.0.0.1:{8081 + OFFSET}/order/b563feb7b2b84b6test")
        assert sample[0] == 200 and sample[1]["order_uid"] == "b563feb7b2b84b6test"
    finally:
        assert stop(process) == 0
    output = (tmp_path / "run1.log").read_text()
    assert "The shop is up" in output and "curl" in output and "Stopped." in output
    summary = output[output.index("The shop is up") : output.index("Stopping")]
    assert "/docs" in summary and f"localhost:{8081 + OFFSET}/" in summary and "make orders" in summary
    # readable: the children's per-request and per-event INFO lines went to their log files, not here
    assert not [line for line in output.splitlines() if '"level": "info"' in line]
    assert (data / "logs" / "loms.log").exists()
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


# --- supervision: a dead part is restarted, the rest keeps serving, nothing is lost -------------------------


def _free_offset() -> int:
    """A port offset whose five service ports are all free now."""
    for _ in range(200):
        offset = free_port() % 20_000 + 20_000 - 8085
        try:
            for service in table.SERVICES.values():
                with socket.socket() as s:
                    s.bind(("127.0.0.1", service.port + offset))
        except OSError:
            continue
        return offset
    raise AssertionError("no free port offset")


def _children(parent: int) -> dict[int, bytes]:
    """pid -> command line of each direct child of `parent`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _child(parent: int, marker: bytes) -> int:
    matches = [pid for pid, cmdline in _children(parent).items() if marker in cmdline]
    assert len(matches) == 1, (marker, matches)
    return matches[0]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def real_infrastructure() -> None:
    from shared_lib.devtools import kafka_server, memcached_server

    for ok, why in (kafka_server.available(), memcached_server.available()):
        if not ok:
            if os.environ.get("CI"):
                pytest.fail(f"make run's Kafka and Memcached are needed under CI: {why}")
            pytest.skip(why)


@dataclass
class RunningShop:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{table.SERVICES[service].port + self.ports['offset']}"


@pytest.fixture
def kafka_shop(tmp_path: Path, data_root: Path, real_infrastructure: None) -> Iterator[RunningShop]:
    """`make run` with its real Kafka and Memcached, every port free; stopped with Ctrl-C at the end, after
    which none of its processes may be left."""
    ports = {"offset": _free_offset(), "kafka": free_port(), "pg": free_port(), "memcached": free_port()}
    log = tmp_path / "run.log"
    process = start(data_root / "data", ports["pg"], log, ports["offset"], ports["kafka"], ports["memcached"])
    started = set(_children(process.pid))
    shop = RunningShop(process, ports, log)
    try:
        yield shop
    finally:
        children = started | set(_children(process.pid))
        assert stop(process) == 0
        left = [pid for pid in children if _alive(pid)]
        assert left == [], f"still running after Ctrl-C: {left}"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", ports["kafka"]), timeout=1).close()


class OrderStream:
    """Creates orders one after another through loms until stopped; remembers each answer."""

    def __init__(self, loms: str) -> None:
        self.loms = loms
        self.created: list[int] = []
        self.failures: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        user = 5_000_000 + os.getpid() % 1000
        while not self.stop.is_set():
            try:
                status, body, _ = call(
                    "POST",
                    f"{self.loms}/order/create",
                    {"userId": user, "items": [{"sku": 139275865, "count": 1}]},
                )
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.created.append(int(body["orderId"]))
            else:
                self.failures.append((status, body))

    def __enter__(self) -> OrderStream:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(60)


def _events_per_order(bootstrap: str, orders: list[int]) -> dict[int, list[str]]:
    wanted = {str(o) for o in orders}

    def complete(records: list[Any]) -> bool:
        ids: dict[str, set[bytes]] = {}
        for r in records:
            if r.key and r.key.decode() in wanted:
                ids.setdefault(r.key.decode(), set()).add(dict(r.headers)["ce_id"])
        return len(ids) == len(wanted) and all(len(v) >= 2 for v in ids.values())

    records = read_records(bootstrap, "loms.order-events", complete, timeout=120)
    statuses: dict[int, list[str]] = {}
    seen: set[bytes] = set()
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        ce_id = dict(r.headers)["ce_id"]
        if r.key and r.key.decode() in wanted and ce_id not in seen:
            seen.add(ce_id)
            statuses.setdefault(int(r.key.decode()), []).append(json.loads(r.value)["status"])
    return statuses


def test_under_make_run_a_killed_relay_is_restarted_and_no_event_is_lost(
    kafka_shop: RunningShop,
) -> None:
    shop = kafka_shop
    process = shop.process
    relay = _child(process.pid, b"functions.loms.relay_worker")
    with OrderStream(shop.url("loms")) as orders:
        wait_for(lambda: len(orders.created) >= 10, timeout=60, what="orders before the kill")
        os.kill(relay, signal.SIGKILL)
        before = len(orders.created)
        wait_for(lambda: "relay is back" in shop.log.read_text(), timeout=120, what="the relay restarted")
        heir = _child(process.pid, b"functions.loms.relay_worker")
        wait_for(lambda: len(orders.created) >= before + 10, timeout=60, what="orders after the restart")
        # the cart, product, notifier and order viewer never stopped answering either
        for service in ("cart", "product", "notifier", "orders"):
            assert call("GET", f"{shop.url(service)}/healthz")[0] == 200
    assert heir != relay and not _alive(relay)
    assert orders.failures == []  # loms answered every request, the gap included
    text = shop.log.read_text()
    assert "relay died (killed by SIGKILL)" in text
    statuses = _events_per_order(f"127.0.0.1:{shop.ports['kafka']}", orders.created)
    # every order's events reached Kafka, those created while no relay ran included, in order
    assert set(statuses) == set(orders.created)
    assert all(s == ["new", "awaiting payment"] for s in statuses.values()), statuses


def test_under_make_run_a_killed_service_is_restarted_while_the_others_serve(
    kafka_shop: RunningShop,
) -> None:
    shop = kafka_shop
    process = shop.process
    product = _child(process.pid, b"--service\x00product")
    os.kill(product, signal.SIGKILL)
    wait_for(lambda: "product died (killed by SIGKILL)" in shop.log.read_text(), timeout=60, what="noticed")
    status, body, _ = call("GET", f"{shop.url('loms')}/stock/info?sku=1076963")  # loms serves meanwhile
    assert status == 200, body
    wait_for(lambda: "product is back" in shop.log.read_text(), timeout=120, what="product restarted")
    status, body, _ = call(
        "GET", f"{shop.url('product')}/product/1076963", headers={"X-API-KEY": "testToken"}
    )
    assert status == 200 and body["name"], body
    assert _child(process.pid, b"--service\x00product") != product
