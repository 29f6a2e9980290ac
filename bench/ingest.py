"""Sustained ingestion of `orders` from Kafka into PostgreSQL, on the ingest worker (the shop's one path).

A fresh PostgreSQL (fsync on, as deployed) and a one-node broker on free ports; --count records (about --bad
of them refused: every invalid kind, conflicts, and duplicates that are not) are produced to their topic, then
`python -m functions.orders.ingest_worker` is started as its own process, exactly as the dev server and the
cluster start it (batches of --batch records, one transaction each), and timed until every valid order is
stored and every refused record is on the dead-letter topic. Figures are printed, never asserted, CPU per
record too: the worker's process (from its start, imports included) and PostgreSQL's postmaster and backends,
from /proc (less the backend that serves the benchmark's own polling), with the machine's load average.
Target (issue 14): at least 2,500 orders/s, CPU per order not growing.

`--baseline DIR` runs the worker of another tree (a `git worktree` of an older commit) beside this one's,
alternating over --rounds rounds (each on its own topic and database, the same records), and prints each
round, the medians and the ratios paired by round: the way to tell a change's effect from the load's.
`--profile` samples this tree's worker with `py-spy record` (only the thread holding the GIL: Python CPU) and
prints the shares by layer and by line (bench.profile's views); its CPU figures then include py-spy's.

The record-by-record path it replaced (a KafkaSource, here the local event source, POSTing each record to an
`ingest_order` CloudEvent function) was measured beside it by `--path both` at commit c9fa525 (README, "The
order viewer").
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, report, topic_size  # noqa: E402
from bench.cpu import cpu_of  # noqa: E402
from bench.stack import kafka_broker, postgres  # noqa: E402
from functions.devtools import orders_generator as generator  # noqa: E402
from shared_lib.devtools.kafka_server import KafkaServer, available  # noqa: E402
from shared_lib.devtools.pg_server import PgServer  # noqa: E402
from shared_lib.postgres import ConnectionPool, Dsn, ensure_database, migrate  # noqa: E402

DEADLINE_SECONDS = 900


def _children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def run_path(
    path: str,
    pg: PgServer,
    broker: KafkaServer,
    work: generator.Plan,
    batch: int,
    tree: Path = ROOT,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Produce the plan's records to this path's topic, ingest them into its own database with the worker of
    `tree` (sampled by py-spy into `profile` when given)."""
    database = f"orders_bench_{path}".replace("-", "_")
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
        "PYTHONPATH": str(tree),
        "ORDERS_DATABASE_URL": dsn,
        "ORDERS_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ORDERS_TOPIC": topic,
        "ORDERS_DEAD_LETTER_TOPIC": dlq,
        "ORDERS_BATCH_SIZE": str(batch),
        "ORDERS_MEMCACHED": "",  # warm-on-ingest goes to the process's own in-process cache
    }
    quiet: dict[str, Any] = {
        "env": env,
        "cwd": tree,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    pool = ConnectionPool(dsn, size=1)
    pg_pid = pg.pid
    assert pg_pid is not None
    # the backend serving this benchmark's own polling (a count every 50 ms) is not the worker's cost: its CPU
    # grows with the run's wall time, so it is taken out of PostgreSQL's and shown apart
    poller = int(pool.run("SELECT pg_backend_pid()")[0][0])
    before = cpu_of({"postgres": pg_pid, "poller": poller})
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        started = time.perf_counter()
        command = [sys.executable, "-m", "functions.orders.ingest_worker"]
        if profile is not None:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            sampler = [py_spy, "record", "--gil", "--rate", "200", "--full-filenames"]
            sampler += ["--format", "raw", "-o", str(profile)]
            command = [*sampler, "--", *command]
        processes["worker"] = subprocess.Popen(command, **quiet)
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
        cpu = cpu_of({**{name: p.pid for name, p in processes.items()}, "postgres": pg_pid, "poller": poller})
        polling = cpu.pop("poller") - before["poller"]
        cpu["postgres"] -= before["postgres"] + polling
        dead_lettered = topic_size(broker.bootstrap, dlq)
    finally:
        for process in processes.values():
            for pid in _children(process.pid) if profile is not None else [process.pid]:
                os.kill(pid, signal.SIGTERM)  # under py-spy, its worker: py-spy writes once it is gone
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
    figures["the benchmark's polling, PostgreSQL µs/record (not above)"] = polling / records * 1e6
    return figures


KEY_FIGURES = {
    "records/s": "records/s (from first stored)",
    "worker µs/record": "worker CPU µs/record",
    "PostgreSQL µs/record": "postgres CPU µs/record",
    "all µs/record": "CPU µs/record, all processes",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50_000, help="records produced (to each path's topic)")
    parser.add_argument("--bad", type=float, default=0.05, help="share of bad records")
    parser.add_argument("--batch", type=int, default=1000, help="ORDERS_BATCH_SIZE (batch path)")
    parser.add_argument("--baseline", type=Path, help="another tree whose worker alternates with this one's")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (each variant once per round)")
    parser.add_argument("--profile", action="store_true", help="sample this tree's worker with py-spy")
    args = parser.parse_args()
    ok, why = available()
    if not ok:
        raise SystemExit(f"no Kafka broker can be started: {why}")
    work = generator.plan(args.count, args.bad, random.Random(7))
    trees = {"batch": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    profile = RESULTS / "profile-ingest-worker.txt" if args.profile else None
    figures: dict[str, Any] = {
        "records on each topic": len(work.records),
        "valid orders": len(work.valid_uids),
        "refused (invalid + conflicts)": len(work.refused),
        "duplicates (not refused)": work.kinds()["duplicate"],
        "batch size (batch path)": args.batch,
        "rounds": args.rounds,
        "load average (1 min) before": os.getloadavg()[0],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with postgres(durable=True) as pg, kafka_broker({}) as broker:
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                label = name if args.rounds == 1 else f"{name}-{round_}"
                if profile is not None and name == "batch":
                    RESULTS.mkdir(exist_ok=True)
                    result = run_path(label, pg, broker, work, args.batch, trees[name], profile)
                else:
                    result = run_path(label, pg, broker, work, args.batch, trees[name])
                runs[name].append(result)
                shown = ", ".join(f"{key} {result[field]:,.0f}" for key, field in KEY_FIGURES.items())
                print(f"round {round_ + 1} {name}: {shown}, load {os.getloadavg()[0]:.1f}", flush=True)
    for name, results in runs.items():
        if len(results) == 1:
            for field, value in results[0].items():
                figures[f"{name}: {field}"] = value
        else:
            figures[f"{name}: complete in every round"] = all(r["complete"] for r in results)
            for key, field in KEY_FIGURES.items():
                figures[f"{name}: {key} (median)"] = statistics.median(r[field] for r in results)
        figures[f"{name}: records/s / target 2,500"] = (
            statistics.median(r["records/s (from first stored)"] for r in results) / 2500
        )
    if "baseline" in runs:
        for key, field in KEY_FIGURES.items():
            ratios = [
                new[field] / old[field]
                for new, old in zip(runs["batch"], runs["baseline"], strict=True)
                if old[field]
            ]
            figures[f"batch / baseline: {key} (median of rounds)"] = statistics.median(ratios)
    figures["load average (1 min) after"] = os.getloadavg()[0]
    report("orders ingestion: Kafka to PostgreSQL, batch worker", figures)
    if profile is not None:
        from bench.profile import print_breakdown

        print_breakdown("the ingest worker under py-spy", profile, top=15)


if __name__ == "__main__":
    main()
