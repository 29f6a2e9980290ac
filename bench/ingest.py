"""Sustained ingestion of `orders` from Kafka into PostgreSQL, on the ingest worker (the shop's one path).

A fresh PostgreSQL (fsync on, as deployed) and a one-node broker on free ports; --count records (about --bad
of them refused: every invalid kind, conflicts, and duplicates that are not) are produced to their topic, then
`python -m functions.orders.ingest_worker` is started as its own process, exactly as the dev server and the
cluster start it (batches of --batch records, one transaction each), and timed until every valid order is
stored and every refused record is on the dead-letter topic. Figures are printed, never asserted, CPU per
record too: the worker's process (from its start, imports included) and PostgreSQL's postmaster and backends,
from /proc, with the machine's load average. Target (issue 14): at least 2,500 orders/s, CPU per order not
growing.

The record-by-record path it replaced (a KafkaSource, here the local event source, POSTing each record to an
`ingest_order` CloudEvent function) was measured beside it by `--path both` at commit c9fa525 (README, "The
order viewer").
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report, topic_size  # noqa: E402
from bench.cpu import cpu_of  # noqa: E402
from bench.stack import kafka_broker, postgres  # noqa: E402
from functions.devtools import orders_generator as generator  # noqa: E402
from shared_lib.devtools.kafka_server import KafkaServer, available  # noqa: E402
from shared_lib.devtools.pg_server import PgServer  # noqa: E402
from shared_lib.postgres import ConnectionPool, Dsn, ensure_database, migrate  # noqa: E402

DEADLINE_SECONDS = 900


def run_path(
    path: str, pg: PgServer, broker: KafkaServer, work: generator.Plan, batch: int
) -> dict[str, Any]:
    """Produce the plan's records to this path's topic, ingest them into its own database."""
    database = f"orders_bench_{path}"
    topic, dlq = f"orders-{path}", f"orders-{path}.dlq"
    broker.create_topics({topic: 3, dlq: 1})
    ensure_database(pg.dsn, database)
    dsn = Dsn.parse(pg.dsn).with_database(database).url()
    migrate(dsn, [ROOT / "sql" / "shared", ROOT / "sql" / "orders"])
    valid, refused = len(work.valid_uids), len(work.refused)
    records = len(work.records)
    started = time.perf_counter()
    generator.send(broker.bootstrap, topic, work.records, records)
    produce_seconds = time.perf_counter() - started
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ORDERS_DATABASE_URL": dsn,
        "ORDERS_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ORDERS_TOPIC": topic,
        "ORDERS_DEAD_LETTER_TOPIC": dlq,
        "ORDERS_BATCH_SIZE": str(batch),
        "ORDERS_MEMCACHED": "",  # warm-on-ingest goes to the process's own in-process cache
    }
    quiet: dict[str, Any] = {
        "env": env,
        "cwd": ROOT,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    pool = ConnectionPool(dsn, size=1)
    pg_pid = pg.pid
    assert pg_pid is not None
    pg_before = cpu_of({"postgres": pg_pid})["postgres"]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        started = time.perf_counter()
        processes["worker"] = subprocess.Popen(
            [sys.executable, "-m", "functions.orders.ingest_worker"], **quiet
        )
        first = None
        stored = 0
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            stored = int(pool.run("SELECT count(*) FROM orders")[0][0])
            if stored and first is None:
                first = time.perf_counter()
            if stored >= valid and topic_size(broker.bootstrap, dlq) >= refused:
                break
            time.sleep(0.05)
        done = time.perf_counter()
        cpu = cpu_of({**{name: p.pid for name, p in processes.items()}, "postgres": pg_pid})
        cpu["postgres"] -= pg_before
        dead_lettered = topic_size(broker.bootstrap, dlq)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(15)
        pool.close()
    steady = done - (first or started)
    figures: dict[str, Any] = {
        "stored": stored,
        "dead-lettered": dead_lettered,
        "complete": stored >= valid and dead_lettered >= refused,
        "produce seconds": produce_seconds,
        "seconds from start": done - started,
        "seconds from first stored order": steady,
        "records/s (from first stored)": records / steady,
        "records/s (from start)": records / (done - started),
    }
    for name, seconds in cpu.items():
        figures[f"{name} CPU µs/record"] = seconds / records * 1e6
    figures["CPU µs/record, all processes"] = sum(cpu.values()) / records * 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50_000, help="records produced (to each path's topic)")
    parser.add_argument("--bad", type=float, default=0.05, help="share of bad records")
    parser.add_argument("--batch", type=int, default=1000, help="ORDERS_BATCH_SIZE (batch path)")
    args = parser.parse_args()
    ok, why = available()
    if not ok:
        raise SystemExit(f"no Kafka broker can be started: {why}")
    work = generator.plan(args.count, args.bad, random.Random(7))
    paths = ("batch",)
    figures: dict[str, Any] = {
        "records on each topic": len(work.records),
        "valid orders": len(work.valid_uids),
        "refused (invalid + conflicts)": len(work.refused),
        "duplicates (not refused)": work.kinds()["duplicate"],
        "batch size (batch path)": args.batch,
        "load average (1 min) before": os.getloadavg()[0],
    }
    with postgres(durable=True) as pg, kafka_broker({}) as broker:
        for path in paths:
            for name, value in run_path(path, pg, broker, work, args.batch).items():
                figures[f"{path}: {name}"] = value
            figures[f"{path}: records/s / target 2,500"] = (
                figures[f"{path}: records/s (from first stored)"] / 2500
            )
    figures["load average (1 min) after"] = os.getloadavg()[0]
    report("orders ingestion: Kafka to PostgreSQL, batch worker", figures)


if __name__ == "__main__":
    main()
