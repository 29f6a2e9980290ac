"""`make run`'s entry point as a user meets it: starts, serves, stops on Ctrl-C, keeps data across restarts,
and keeps serving when one of its parts dies (the part is restarted, nothing is lost).

Runs beside the session's stack on free ports (a service port offset at which every service port is free,
free PostgreSQL, Kafka and Memcached ports), proven held by the processes it started, and its own PostgreSQL
data directory. Nothing it started may outlive its Ctrl-C.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from functions import table
from functions.devserver import ROOT, describe_exit
from shared_lib.devtools.pg_server import PgServer
from shared_lib.devtools.ports import free_port
from tests.e2e.http import call, notifications
from tests.fixtures.kafka import read_records
from tests.fixtures.stack import free_port_offset, listens_on
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

ATTEMPTS = 4  # a port another process takes between our choice and the dev server's bind: other ports


@dataclass
class RunningShop:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{table.SERVICES[service].port + self.ports['offset']}"


def choose_ports(real_infrastructure: bool) -> dict[str, int]:
    """Free ports for one `make run`: a service port offset at which every service port is free, and
    PostgreSQL's (with the real broker and cache, Kafka's and Memcached's)."""
    ports = {"offset": free_port_offset(), "pg": free_port()}
    if real_infrastructure:
        ports |= {"kafka": free_port(), "memcached": free_port()}
    return ports


def prove_ours(shop: RunningShop) -> None:
    """AssertionError unless every service port is held by a process this `make run` started (its gunicorns
    are its children) and answers /healthz as that service: not a stranger that happens to answer 200."""
    for service in table.SERVICES:
        port = table.SERVICES[service].port + shop.ports["offset"]
        assert listens_on(shop.process.pid, port), (
            f"{service}: port {port} is held by a process this test did not start"
        )
        status, health, _ = call("GET", f"{shop.url(service)}/healthz")
        assert (status, health.get("service")) == (200, service), (port, status, health)


def start(data: Path, log: Path, real_infrastructure: bool = False) -> RunningShop:
    """`make run` on free ports, proven to be what answers there; with real_infrastructure the real broker and
    cache, else the embedded fallbacks. A port taken by another process meanwhile: again on other ports."""
    for attempt in range(1, ATTEMPTS + 1):
        ports = choose_ports(real_infrastructure)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = ["--data", str(data), "--pg-port", str(ports["pg"]), "--port-offset", str(ports["offset"])]
        if real_infrastructure:
            args += ["--kafka-port", str(ports["kafka"]), "--memcached-port", str(ports["memcached"])]
        else:
            args.append("--embedded")  # the fallback path: in-process event delivery and caches
        process = subprocess.Popen(
            [sys.executable, "-m", "functions.devserver", "run", *args],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        shop = RunningShop(process, ports, log)
        try:
            wait_for(functools.partial(up_or_exited, shop), timeout=240, what="the summary")
            assert process.poll() is None, f"make run {describe_exit(process.returncode)}:\n{log.read_text()}"
            prove_ours(shop)
            return shop
        except AssertionError:
            if process.poll() is None:
                stop(process)
            taken = [p for p in _ports_of(ports) if _held_by_another(p, process.pid)]
            if not taken or attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def up_or_exited(shop: RunningShop) -> bool:
    return "The shop is up" in shop.log.read_text() or shop.process.poll() is not None


def _ports_of(ports: dict[str, int]) -> list[int]:
    services = [s.port + ports["offset"] for s in table.SERVICES.values()]
    return services + [port for name, port in ports.items() if name != "offset"]


def _held_by_another(port: int, pid: int) -> bool:
    """Whether something other than process `pid` (and its descendants) listens on `port`."""
    return listening(port) and not listens_on(pid, port)


def listening(port: int) -> bool:
    """Whether any process listens on TCP `port` now."""
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port
        for c in psutil.net_connections(kind="tcp")
    )


def family(pid: int) -> set[int]:
    """Process `pid` and every descendant it has now."""
    root = psutil.Process(pid)
    return {pid, *(child.pid for child in root.children(recursive=True))}


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
    return process.wait(60)


def assert_stopped(shop: RunningShop, processes: set[int], data: Path) -> None:
    """Nothing `make run` started is left: not one of its processes, not PostgreSQL (which pg_ctl runs apart
    from it), and nothing listens on a port it served."""
    left = [pid for pid in processes if _alive(pid)]
    assert left == [], f"still running after Ctrl-C: {left}"
    assert PgServer(data, shop.ports["pg"]).pid is None, "PostgreSQL still runs after Ctrl-C"
    served = [p for p in _ports_of(shop.ports) if listening(p)]
    assert served == [], f"still listening after Ctrl-C: {served}"


def test_run_serves_stops_cleanly_and_keeps_data(tmp_path: Path, data_root: Path) -> None:
    data = data_root / "pg"
    shop = start(data, tmp_path / "run1.log")
    cart, loms = shop.url("cart"), shop.url("loms")
    processes = family(shop.process.pid)
    try:
        assert call("POST", f"{cart}/user/31337/cart/1076963", {"count": 2})[0] == 200
        stock = call("GET", f"{loms}/stock/info?sku=1076963")[1]["count"]
        assert stock == 300 - 35  # the seed: total 300, reserved 35
        # events without Kafka: the relay delivers straight to notify_status, still in order
        order = call(
            "POST", f"{loms}/order/create", {"userId": 777, "items": [{"sku": 1148162, "count": 1}]}
        )[1]
        assert call("POST", f"{loms}/order/pay", {"orderId": order["orderId"]})[0] == 200
        items = wait_for(lambda: (got := notifications(shop.url("notifier"), 777)) and len(got) >= 3 and got)
        assert [i["status"] for i in items] == ["new", "awaiting payment", "paid"]
        # the README's and the order page's sample order is there
        sample = call("GET", f"{shop.url('orders')}/order/b563feb7b2b84b6test")
        assert sample[0] == 200 and sample[1]["order_uid"] == "b563feb7b2b84b6test"
        processes |= family(shop.process.pid)
    finally:
        assert stop(shop.process) == 0
    output = (tmp_path / "run1.log").read_text()
    assert "The shop is up" in output and "curl" in output and "Stopped." in output
    assert "Kafka: not used (SHOP_EMBEDDED is set)" in output
    summary = output[output.index("The shop is up") : output.index("Stopping")]
    assert (
        "/docs" in summary and f"localhost:{table.SERVICES['orders'].port + shop.ports['offset']}/" in summary
    )
    assert "make orders" in summary
    # readable: the children's per-request and per-event INFO lines went to their log files, not here
    assert not [line for line in output.splitlines() if '"level": "info"' in line]
    assert (data / "logs" / "loms.log").exists()
    assert_stopped(shop, processes, data / "pg")

    shop = start(data, tmp_path / "run2.log")  # data survives a restart of make run (on other ports)
    try:
        status, body, _ = call("GET", f"{shop.url('cart')}/user/31337/cart")
        assert status == 200
        assert body["items"][0]["count"] == 2
    finally:
        assert stop(shop.process) == 0


# --- supervision: a dead part is restarted, the rest keeps serving, nothing is lost -------------------------


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


@pytest.fixture
def kafka_shop(tmp_path: Path, data_root: Path, real_infrastructure: None) -> Iterator[RunningShop]:
    """`make run` with its real Kafka and Memcached, every port free; stopped with Ctrl-C at the end, after
    which none of its processes may be left."""
    shop = start(data_root / "data", tmp_path / "run.log", real_infrastructure=True)
    processes = family(shop.process.pid)
    try:
        yield shop
    finally:
        processes |= family(shop.process.pid)
        assert stop(shop.process) == 0
        assert_stopped(shop, processes, data_root / "data" / "pg")


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
