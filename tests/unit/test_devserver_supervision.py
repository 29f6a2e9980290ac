"""make run's supervision and configuration, without processes: a dead part is restarted with backoff and
reported, a failing restart is tried again later, nothing restarts once stopping; the user's environment
wins over the dev server's defaults; only warnings and errors reach the terminal; the processes beside the
services are the table's workers and the event sources no worker stands in for."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions import devserver, table
from shared_lib.retry import Backoff
from tests.polling import wait_for


class FakePart:
    def __init__(self, name: str, failing_restarts: int = 0) -> None:
        self.name = name
        self.up = True
        self.failing_restarts = failing_restarts
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1
        if self.failing_restarts:
            self.failing_restarts -= 1
            raise RuntimeError("port in use\nmore detail")
        self.up = True

    def part(self) -> devserver.Part:
        return devserver.Part(self.name, lambda: self.up, self.restart, lambda: "killed by SIGKILL")


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """The supervisor's backoff, remembering each (retry number, delay) it was asked for: what it decided."""

    decided: list[tuple[int, float]] = field(default_factory=list)

    def delay(self, retry_number: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        chosen = super().delay(retry_number, rng)
        self.decided.append((retry_number, chosen))
        return chosen


def _supervisor(parts: list[FakePart], lines: list[str]) -> devserver.Supervisor:
    return devserver.Supervisor(
        [p.part() for p in parts],
        report=lines.append,
        backoff=Backoff(0.01, 0.05, jitter=False),
        interval=0.005,
    )


def test_a_dead_part_is_restarted_and_reported_while_the_others_are_left_alone() -> None:
    relay, loms = FakePart("relay"), FakePart("loms")
    lines: list[str] = []
    supervisor = _supervisor([relay, loms], lines)
    stop = threading.Event()
    thread = supervisor.start(stop)
    try:
        relay.up = False
        wait_for(lambda: supervisor.restarts.get("relay") == 1, timeout=30)
    finally:
        stop.set()
        thread.join(10)
    assert relay.up and relay.restarts == 1 and loms.restarts == 0
    assert lines[0].startswith("relay died (killed by SIGKILL); restarting it in ")
    assert lines[1].startswith("relay is back after ")


def test_a_restart_that_fails_is_tried_again_with_a_longer_delay() -> None:
    kafka = FakePart("kafka", failing_restarts=2)
    lines: list[str] = []
    supervisor = _supervisor([kafka], lines)
    backoff = RecordingBackoff(0.01, 1.0, jitter=False)
    supervisor.backoff = backoff
    stop = threading.Event()
    thread = supervisor.start(stop)
    try:
        kafka.up = False
        wait_for(lambda: supervisor.restarts.get("kafka") == 1, timeout=30)
    finally:
        stop.set()
        thread.join(10)
    assert kafka.restarts == 3
    # what the supervisor scheduled: after the death, then after each failed restart, a longer delay
    assert backoff.decided == [(1, 0.01), (2, 0.02), (3, 0.04)]
    assert [line.split(" (")[0] for line in lines[:3]] == ["kafka died"] + ["kafka did not come back"] * 2
    assert lines[3].startswith("kafka is back after ")
    assert "port in use)" in lines[1] and "more detail" not in lines[1]  # the first line of the error


def test_nothing_is_restarted_once_stopping() -> None:
    part = FakePart("cart")
    part.up = False
    supervisor = _supervisor([part], [])
    stop = threading.Event()
    stop.set()
    supervisor.run(stop)
    assert part.restarts == 0


def test_the_users_environment_wins_over_the_dev_servers_defaults() -> None:
    defaults = devserver.service_environment("postgresql://postgres@127.0.0.1:15432/postgres", 0, None, None)
    mine = {"CART_PRODUCT_URL": "http://127.0.0.1:28082", "CART_LOMS_URL": "", "UNRELATED": "x"}
    environment, taken = devserver.honour_environment(defaults, mine)
    assert environment["CART_PRODUCT_URL"] == "http://127.0.0.1:28082"  # e.g. toxiproxy in front of product
    assert environment["CART_LOMS_URL"] == defaults["CART_LOMS_URL"]  # empty: not set
    assert taken == {"CART_PRODUCT_URL": "http://127.0.0.1:28082"} and "UNRELATED" not in environment


def test_only_warnings_errors_and_non_json_lines_reach_the_terminal() -> None:
    def line(level: str) -> bytes:
        return json.dumps({"level": level, "message": "m"}).encode() + b"\n"

    warning = devserver.LEVELS["warning"]
    assert not devserver.worth_showing(line("info"), warning)
    assert devserver.worth_showing(line("warning"), warning)
    assert devserver.worth_showing(line("error"), warning)
    assert devserver.worth_showing(b"Traceback (most recent call last):\n", warning)
    assert not devserver.worth_showing(b"\n", warning)


def test_an_exit_is_described_by_its_signal_or_status() -> None:
    assert devserver.describe_exit(-9) == "killed by SIGKILL"
    assert devserver.describe_exit(3) == "exited with status 3"


# --- what the dev server runs beside the services: the table's workers and the local event sources ---------


def _children(kafka: str = "", **stack: Any) -> dict[str, list[str]]:
    return devserver.Stack({"LOMS_KAFKA_BOOTSTRAP": kafka}, **stack).children()


def test_without_kafka_the_stack_runs_the_tables_workers_that_need_none_and_no_event_source() -> None:
    children = _children()
    assert children == {w.name: ["-m", w.module, *w.args] for w in table.WORKERS if not w.topic}
    assert "outbox_relay" in children and "--port" not in children["outbox_relay"]
    assert "ingest_worker" not in children  # it consumes Kafka


def test_with_kafka_every_worker_runs_and_an_event_source_per_cloudevent_function() -> None:
    children = _children("127.0.0.1:19092", port_offset=100)
    assert {w.name for w in table.WORKERS} <= set(children)
    assert children["ingest_worker"] == ["-m", "functions.orders.ingest_worker"]
    sources = {name for name in children if name.startswith("source-")}
    assert sources == {f"source-{f.name}" for f in table.FUNCTIONS if f.trigger == "cloudevent"}
    assert "source-ingest_order" not in children  # orders come in through the ingest worker alone
    source = children["source-notify_status"]
    assert source[:2] == ["-m", "shared_lib.eventsource"]
    notifier = table.SERVICES["notifier"].port + 100
    assert source[source.index("--sink") + 1] == f"http://127.0.0.1:{notifier}/events/notify_status"
    assert source[source.index("--bootstrap") + 1] == "127.0.0.1:19092"


def test_a_worker_left_out_or_of_a_service_not_served_does_not_run() -> None:
    children = _children("127.0.0.1:19092", without=("outbox_relay", "ingest_worker"))
    assert not set(children) & {"outbox_relay", "ingest_worker"}
    assert "source-notify_status" in children
    only_loms = _children("127.0.0.1:19092", services=("loms",))
    assert set(only_loms) == {"outbox_relay"}


def test_a_workers_metrics_go_to_its_services_directory() -> None:
    stack = devserver.Stack({})
    try:
        assert stack.metrics_dir("outbox_relay") == stack.metrics_dir("loms")
        assert stack.metrics_dir("ingest_worker") == stack.metrics_dir("orders")
        assert stack.metrics_dir("source-notify_status") == stack.metrics_dir("notifier")
    finally:
        stack.stop()
