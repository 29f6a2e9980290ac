"""`python -m functions.orders.ingest_worker`: the order viewer's ingestion, a long-running process.

Consumes `orders` (ORDERS_KAFKA_BOOTSTRAP, group ORDERS_CONSUMER_GROUP) in batches of up to ORDERS_BATCH_SIZE
records, stores each batch in one transaction, dead-letters the invalid and conflicting records with their
reason, commits offsets once a batch is done (a restart redelivers at most the batch in flight, which changes
nothing), and stops on SIGTERM or SIGINT after the batch in flight.

The dev server runs it beside the order viewer (with Kafka); the cluster, Knative's and OpenFaaS's alike, runs
it as the Deployment `orders-ingest-worker` with `--port`, which adds GET /healthz (503 once the loop has not
gone round for --stale-after seconds: the liveness probe restarts it) and GET /metrics. Its replicas share one
consumer group, so more replicas than the topic has partitions only wait.
"""

from __future__ import annotations

if __name__ == "__main__":  # the worker starting, not an import
    from shared_lib import lifecycle

    lifecycle.program_starting()  # before the consumer's model is built (imported below)

import argparse
import logging
import sys
import time
from typing import Any

from functions.orders import bootstrap
from functions.orders.adapters.kafka import KafkaOrderStream
from shared_lib import lifecycle
from shared_lib.observability import server as observed

log = logging.getLogger(__name__)
# a pass takes at most a poll (0.2 s), a reconnect backoff (≤ 5 s), or a batch's transaction and dead letters
STALE_AFTER_SECONDS = 120.0


def health(stream: KafkaOrderStream, stale_after: float) -> tuple[bool, dict[str, Any]]:
    """Alive while the stream's loop went round within `stale_after` seconds (or is still starting)."""
    if stream.last_pass is None:
        return True, {"last_pass_seconds_ago": None}
    ago = time.monotonic() - stream.last_pass
    return ago <= stale_after, {"last_pass_seconds_ago": round(ago, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the order viewer's ingestion of `orders` until SIGTERM")
    parser.add_argument("--port", type=int, default=0, help="serve /healthz and /metrics here (0: do not)")
    parser.add_argument(
        "--stale-after", type=float, default=STALE_AFTER_SECONDS, help="seconds; see /healthz"
    )
    args = parser.parse_args(argv)
    observed.setup("orders")  # JSON lines on stdout, as every other process of the shop
    logging.getLogger("functions.orders.service").setLevel(logging.ERROR)  # one line per dead letter: noisy
    stop = lifecycle.stop_on_signals()
    config = bootstrap.settings()
    stream = bootstrap.order_stream()
    log.info(
        "ingesting %s from %s in batches of up to %d", config.topic, config.kafka_bootstrap, config.batch_size
    )
    endpoints = None
    if args.port:
        endpoints = observed.WorkerEndpoints(args.port, lambda: health(stream, args.stale_after))
        log.info("ingest worker probes and metrics on port %d", endpoints.port)
    started = time.monotonic()
    try:
        bootstrap.ingest_forever(stop, stream)
    finally:
        counts = bootstrap.counters().snapshot()
        log.info("stopped after %.0f s: %s", time.monotonic() - started, counts or "nothing ingested")
        if endpoints is not None:
            endpoints.close()
        lifecycle.run_shutdown_hooks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
