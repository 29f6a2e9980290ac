"""Outbox relay throughput: a fresh loms database with a full outbox, drained to a real Kafka broker.

Fills the outbox of a fresh database (fsync on, as deployed) with --events rows spread over many orders,
starts a one-node broker with shared_lib.devtools.kafka_server, and times OutboxRelay.drain() with the
KafkaPublisher (acks=all, idempotent; each batch is marked sent only after the broker acknowledged it).
Also counts what reached the topic, and the relay's CPU per event (this process's user + system time over the
drain: the relay and kafka-python's sender thread; the outbox is filled before). Figures are printed, never
asserted. Target: at least 5,000 events/s.

`--batch` sets the events per publish: every batch costs about the same fixed CPU (a broker round trip through
kafka-python's sender thread, reading and marking the batch) on top of the per-event work, so `--batch 2`
against the default 1000 shows both (a relay woken per commit publishes batches of a few events; see
LOMS_RELAY_GATHER_SECONDS).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, report, scratch_dir, topic_size  # noqa: E402
from bench.stack import postgres  # noqa: E402
from functions.loms.adapters.pg_outbox import PgOutbox  # noqa: E402
from functions.loms.service import ORDER_EVENTS_TOPIC, OutboxRelay  # noqa: E402
from shared_lib.devtools.kafka_server import KafkaServer, available  # noqa: E402
from shared_lib.events import KafkaPublisher  # noqa: E402
from shared_lib.postgres import ConnectionPool, Dsn, ensure_database, migrate  # noqa: E402


def fill(dsn: str, events: int, orders: int) -> None:
    """`events` rows over `orders` orders, ids ascending as the relay reads them (one shard: id = seq)."""
    ConnectionPool(dsn, size=1).run(
        "INSERT INTO outbox (event_id, order_id, user_id, status, moment)"
        " SELECT nextval('outbox_seq'), 1 + g % :orders, 31337, 'awaiting payment',"
        " clock_timestamp() FROM generate_series(1, :events) g",
        orders=orders,
        events=events,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per publish and per mark")
    args = parser.parse_args()
    ok, why = available()
    if not ok:
        raise SystemExit(f"no Kafka broker can be started: {why}")
    with postgres(durable=True) as pg:
        ensure_database(pg.dsn, "loms_bench")
        dsn = Dsn.parse(pg.dsn).with_database("loms_bench").url()
        migrate(dsn, [ROOT / "sql" / "shared", ROOT / "sql" / "loms"])
        fill(dsn, args.events, args.orders)
        broker = KafkaServer(scratch_dir("shop-bench-kafka-"), free_port(), free_port())
        started = time.perf_counter()
        broker.start()
        broker_start = time.perf_counter() - started
        try:
            broker.create_topics({ORDER_EVENTS_TOPIC: 2})
            publisher = KafkaPublisher(broker.bootstrap, client_id="loms-bench")
            relay = OutboxRelay(PgOutbox([dsn]), publisher, batch_size=args.batch)
            try:
                started, cpu_started = time.perf_counter(), time.process_time()
                published = relay.drain()
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
            finally:
                relay.close()
                publisher.close()
            on_topic = topic_size(broker.bootstrap, ORDER_EVENTS_TOPIC)
            unsent = ConnectionPool(dsn, size=1).run("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        finally:
            broker.stop()
    report(
        "outbox relay: drain to Kafka",
        {
            "events in the outbox": args.events,
            "orders (record keys)": args.orders,
            "batch size": args.batch,
            "published": published,
            "records on the topic": on_topic,
            "left unsent": int(unsent[0][0]),
            "drain seconds": seconds,
            "events/s": published / seconds,
            "target events/s": 5000,
            "events/s / target": published / seconds / 5000,
            "relay CPU µs/event": cpu / max(published, 1) * 1e6,
            "relay CPU µs/batch": cpu / max(-(-published // args.batch), 1) * 1e6,
            "broker start seconds": broker_start,
        },
    )


if __name__ == "__main__":
    main()
