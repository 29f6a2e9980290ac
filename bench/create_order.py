"""create_order throughput through the HTTP function next to the same SQL transaction run by pgbench.

Both at 8 concurrent clients on the same database (fsync on), one unit of a random SKU out of 100 plentiful
ones. The pgbench script (bench/create_order.pgbench.sql) is the statement sequence loms runs for an order
of one item; the ratio HTTP / pgbench is the share of the database's own speed the function keeps.
Target: ratio ≥ 0.5.

loms prepares each statement once per connection and then runs it with one round trip, so the reference is
pgbench in the same protocol (`-M prepared`); pgbench's default (`-M simple`, every statement parsed and
planned again) is printed beside it. loms also sends the BEGIN with the first statement (5 round trips to
pgbench's 6: pgbench cannot pipeline a statement whose result it stores with gset), which favours loms a
little. HTTP and pgbench runs alternate for --rounds rounds and medians are compared: this machine's speed
drifts by ±15 % between runs of a few seconds. loms' outbox relay is left out (its events wait in the outbox;
bench.relay_throughput measures it), so that only the function and the database share the cores. The HTTP load
comes from wrk (`apt-get install wrk`) when installed, else Python threads (which take a share of the same 2
cores, so the figure is lower).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

from bench.common import report
from bench.stack import shop
from shared_lib.devtools.pg_server import find_binaries
from shared_lib.postgres import ConnectionPool, Dsn

SCRIPT = Path(__file__).with_name("create_order.pgbench.sql")
WRK_SCRIPT = Path(__file__).with_name("create_order.wrk.lua")
FIRST_SKU = 900_000_001
SKU_COUNT = 100


def stock_up(dsn: str) -> None:
    ConnectionPool(dsn).run(
        "INSERT INTO stocks (sku, total_count, reserved)"
        " SELECT s, 1000000000, 0 FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) s"
        " ON CONFLICT (sku) DO NOTHING",
        a=FIRST_SKU,
        b=FIRST_SKU + SKU_COUNT - 1,
    )


def http_clients(port: int, clients: int, seconds: float) -> tuple[int, int]:
    done, failed = [0] * clients, [0] * clients
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        rng = random.Random(index)
        while time.monotonic() < deadline:
            body = {
                "userId": rng.randint(1, 10**6),
                "items": [{"sku": FIRST_SKU + rng.randrange(SKU_COUNT), "count": 1}],
            }
            connection.request(
                "POST", "/order/create", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                done[index] += 1
            else:
                failed[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), sum(failed)


def wrk_clients(port: int, clients: int, seconds: int) -> tuple[float, int]:
    """wrk (Debian's package, written in C) as the load: it costs the 2 cores far less than Python clients."""
    output = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(clients),
            "-d",
            f"{seconds}s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "FIRST_SKU": str(FIRST_SKU), "SKU_COUNT": str(SKU_COUNT)},
    ).stdout
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    assert rate, output
    return float(rate.group(1)), int(bad.group(1)) if bad else 0


def pgbench(dsn: str, clients: int, seconds: int, protocol: str) -> float:
    parts = Dsn.parse(dsn)
    binary = find_binaries()[0] / "pgbench"
    if not binary.exists():
        binary = Path("/usr/bin/pgbench")
    output = subprocess.run(
        [
            str(binary),
            "-n",
            "-M",
            protocol,
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(SCRIPT),
            "-D",
            f"first_sku={FIRST_SKU}",
            "-D",
            f"sku_count={SKU_COUNT}",
            "-h",
            parts.host,
            "-p",
            str(parts.port),
            "-U",
            parts.user,
            parts.database,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="per run")
    parser.add_argument("--rounds", type=int, default=3, help="HTTP, pgbench prepared, pgbench simple each")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the loms process")
    args = parser.parse_args()
    http_rates: list[float] = []
    prepared: list[float] = []
    simple: list[float] = []
    failed = 0
    load = "wrk" if shutil.which("wrk") else "python threads"
    with shop(("loms",), workers=args.workers, relay=False) as running:
        dsn = running.environment["LOMS_SHARD_DSNS"].split(",")[0]
        stock_up(dsn)
        port = int(running.url("loms").rsplit(":", 1)[1])
        http_clients(port, args.clients, 2)  # warm-up
        for round_number in range(1, args.rounds + 1):
            if load == "wrk":
                rate, bad = wrk_clients(port, args.clients, args.seconds)
            else:
                ok, bad = http_clients(port, args.clients, args.seconds)
                rate = ok / args.seconds
            http_rates.append(rate)
            failed += bad
            prepared.append(pgbench(dsn, args.clients, args.seconds, "prepared"))
            simple.append(pgbench(dsn, args.clients, args.seconds, "simple"))
            print(
                f"round {round_number}: HTTP {rate:,.0f}/s, pgbench prepared {prepared[-1]:,.0f}/s,"
                f" simple {simple[-1]:,.0f}/s",
                flush=True,
            )
    http_rate = statistics.median(http_rates)
    report(
        "create_order: HTTP function vs pgbench, same transaction",
        {
            "clients": args.clients,
            "loms gunicorn workers": args.workers,
            "HTTP load from": load,
            "rounds (median of each)": args.rounds,
            "HTTP orders/s": http_rate,
            "HTTP failures": failed,
            "pgbench -M prepared transactions/s": statistics.median(prepared),
            "pgbench -M simple transactions/s": statistics.median(simple),
            "ratio HTTP / pgbench prepared": http_rate / statistics.median(prepared),
            "ratio HTTP / pgbench simple": http_rate / statistics.median(simple),
            "target ratio (against prepared, the protocol loms uses)": 0.5,
        },
    )


if __name__ == "__main__":
    main()
