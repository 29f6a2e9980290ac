"""From the pay_order commit to the notification row: the outbox, the relay (LISTEN/NOTIFY), real Kafka,
the local KafkaSource and notify_status, through the dev server.

Orders are created first (and their events drained), then paid at a steady 50 orders/s. Latency per order =
the notification row's recorded_at − the outbox event's moment (the status change, just before its commit),
both on the same PostgreSQL clock. Target: p99 ≤ 250 ms.

`--relay worker` (the default, what make run and the cluster run): the relay worker, woken by NOTIFY, with the
relay_outbox cron function as its backstop. `--relay cron`: the backstop alone (the worker left out), fired
by the dev server's PingSource stand-in once a minute, as when the worker is down; the pays start once the
cron call that relayed the creates has gone quiet.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import time

from bench.common import percentile, report
from bench.stack import shop
from shared_lib.postgres import ConnectionPool

LINGER_SECONDS = 5.0  # LOMS_RELAY_LINGER_SECONDS' default


def post(connection: http.client.HTTPConnection, path: str, body: object) -> dict[str, object]:
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read() or b"null")
    assert response.status == 200, (response.status, payload)
    return dict(payload)


def wait_until(notifier: ConnectionPool, status: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if notifier.run("SELECT count(*) FROM notifications WHERE status = :s", s=status)[0][0] >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {count} {status!r} notifications after {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="pays per second")
    parser.add_argument("--relay", choices=["worker", "cron"], default="worker", help="see above")
    args = parser.parse_args()
    with shop(("loms", "notifier"), real_events=True, relay=args.relay == "worker") as running:
        port = int(running.url("loms").rsplit(":", 1)[1])
        loms = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        orders = [
            post(loms, "/order/create", {"userId": 1000 + i, "items": [{"sku": 139275865, "count": 1}]})[
                "orderId"
            ]
            for i in range(args.orders)
        ]
        notifier = ConnectionPool(running.environment["NOTIFIER_DATABASE_URL"])
        wait_until(
            notifier, "awaiting payment", len(orders), timeout=240
        )  # the creates' events are not part of the figure
        if args.relay == "cron":
            # the cron call that brought the creates' events keeps relaying for its linger (5 s) and as long
            # as events keep coming: pay once it has ended, as an event after a quiet spell meets the backstop
            time.sleep(LINGER_SECONDS + 2)
        loms.close()  # a new connection: loms closes one idle beyond its keep-alive (the cron relay's wait)
        loms = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.monotonic()
        for index, order_id in enumerate(orders):
            time.sleep(max(0.0, started + index / args.rate - time.monotonic()))
            post(loms, "/order/pay", {"orderId": order_id})
        pay_seconds = time.monotonic() - started
        wait_until(notifier, "paid", len(orders), timeout=240)
        latencies = [
            float(row[0]) * 1000
            for row in notifier.run(
                "SELECT extract(epoch FROM recorded_at - created_at) FROM notifications WHERE status = 'paid'"
            )
        ]
        loms_db = ConnectionPool(running.environment["LOMS_SHARD_DSNS"].split(",")[0])
        relayed = [
            float(row[0]) * 1000
            for row in loms_db.run(
                "SELECT extract(epoch FROM sent_at - moment) FROM outbox"
                " WHERE status = 'paid' AND sent_at IS NOT NULL"
            )
        ]
    report(
        f"pay_order commit -> notification row, 50 orders/s, real Kafka, relay {args.relay}",
        {
            "relay": args.relay,
            "load average (1 min) after": os.getloadavg()[0],
            "orders paid": len(orders),
            "pay rate achieved /s": len(orders) / pay_seconds,
            "notifications seen": len(latencies),
            "p50 ms": percentile(latencies, 50),
            "p90 ms": percentile(latencies, 90),
            "p99 ms": percentile(latencies, 99),
            "max ms": max(latencies),
            "of which commit -> broker ack, p50 ms": percentile(relayed, 50),
            "of which commit -> broker ack, p99 ms": percentile(relayed, 99),
            "target p99 ms": 250,
            "p99 / target": percentile(latencies, 99) / 250,
        },
    )


if __name__ == "__main__":
    main()
