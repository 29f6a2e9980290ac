"""Sustained ingestion of `orders` from Kafka into PostgreSQL, on the batch path the dev server runs.

A fresh PostgreSQL (fsync on, as deployed) and a one-node broker on free ports; --count records (about --bad
of them refused: every invalid kind, conflicts, and duplicates that are not) are produced to `orders` first,
then `python -m functions.orders.ingest_worker` is started as its own process, exactly as the dev server
starts it, and timed until every valid order is stored and every refused record is on `orders.dlq`.
Figures are printed, never asserted, CPU per record too: the worker's process (from its start, imports
included) and PostgreSQL's postmaster and backends, from /proc. Target (issue 14): at least 2,500 orders/s,
CPU per order not growing.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report, topic_size  # noqa: E402
from bench.cpu import cpu_of  # noqa: E402
from bench.stack import kafka_broker, postgres  # noqa: E402
from functions.devtools import orders_generator as generator  # noqa: E402
from shared_lib.devtools.kafka_server import available  # noqa: E402
from shared_lib.postgres import ConnectionPool, Dsn, ensure_database, migrate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50_000, help="records produced")
    parser.add_argument("--bad", type=float, default=0.05, help="share of bad records")
    parser.add_argument("--batch", type=int, default=1000, help="ORDERS_BATCH_SIZE")
    args = parser.parse_args()
    ok, why = available()
    if not ok:
        raise SystemExit(f"no Kafka broker can be started: {why}")
    work = generator.plan(args.count, args.bad, random.Random(7))
    valid, refused = len(work.valid_uids), len(work.refused)
    with postgres(durable=True) as pg:
        ensure_database(pg.dsn, "orders_bench")
        dsn = Dsn.parse(pg.dsn).with_database("orders_bench").url()
        migrate(dsn, [ROOT / "sql" / "shared", ROOT / "sql" / "orders"])
        with kafka_broker({"orders": 3, "orders.dlq": 1}) as broker:
            worker = None
            try:
                started = time.perf_counter()
                generator.send(broker.bootstrap, "orders", work.records, len(work.records))
                produce_seconds = time.perf_counter() - started
                env = {
                    **os.environ,
                    "PYTHONPATH": str(ROOT),
                    "ORDERS_DATABASE_URL": dsn,
                    "ORDERS_KAFKA_BOOTSTRAP": broker.bootstrap,
                    "ORDERS_BATCH_SIZE": str(args.batch),
                    "ORDERS_MEMCACHED": "",  # warm-on-ingest goes to the worker's own in-process cache
                }
                pool = ConnectionPool(dsn, size=1)
                pg_pid = pg.pid
                assert pg_pid is not None
                pg_before = cpu_of({"postgres": pg_pid})["postgres"]
                started = time.perf_counter()
                worker = subprocess.Popen(
                    [sys.executable, "-m", "functions.orders.ingest_worker"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                first = None
                stored = 0
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    stored = int(pool.run("SELECT count(*) FROM orders")[0][0])
                    if stored and first is None:
                        first = time.perf_counter()
                    if stored >= valid and topic_size(broker.bootstrap, "orders.dlq") >= refused:
                        break
                    time.sleep(0.05)
                done = time.perf_counter()
                cpu = cpu_of({"worker": worker.pid, "postgres": pg_pid})  # the worker's from its start
                cpu["postgres"] -= pg_before
                dead_lettered = topic_size(broker.bootstrap, "orders.dlq")
            finally:
                if worker is not None:
                    worker.terminate()
                    worker.wait(15)
    records = len(work.records)
    steady = done - (first or started)
    report(
        "orders ingestion: Kafka to PostgreSQL, batch worker",
        {
            "records on the topic": records,
            "valid orders": valid,
            "refused (invalid + conflicts)": refused,
            "duplicates (not refused)": work.kinds()["duplicate"],
            "batch size": args.batch,
            "stored": stored,
            "dead-lettered": dead_lettered,
            "produce seconds": produce_seconds,
            "seconds from worker start": done - started,
            "seconds from first stored order": steady,
            "records/s (from first stored)": records / steady,
            "orders/s (from worker start)": records / (done - started),
            "worker CPU µs/record (from its start)": cpu["worker"] / records * 1e6,
            "PostgreSQL CPU µs/record": cpu["postgres"] / records * 1e6,
            "target records/s": 2500,
            "records/s / target": records / steady / 2500,
        },
    )


if __name__ == "__main__":
    main()
