"""`python -m functions.orders.ingest_worker`: the batch path of ingest_order, as a long-running process.

Consumes `orders` (ORDERS_KAFKA_BOOTSTRAP, group ORDERS_CONSUMER_GROUP) in batches of up to ORDERS_BATCH_SIZE
records, stores each batch in one transaction through the same service code as the CloudEvent function,
dead-letters the invalid and conflicting records, commits offsets, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import sys
import time

from functions.orders import bootstrap
from shared_lib import lifecycle
from shared_lib.observability import server as observed


def main() -> int:
    observed.setup("orders")  # JSON lines on stdout, as every other process of the shop
    logging.getLogger("functions.orders.service").setLevel(logging.ERROR)  # one line per dead letter: noisy
    stop = lifecycle.stop_on_signals()
    config = bootstrap.settings()
    logging.getLogger(__name__).info(
        "ingesting %s from %s in batches of up to %d", config.topic, config.kafka_bootstrap, config.batch_size
    )
    started = time.monotonic()
    try:
        bootstrap.ingest_forever(stop)
    finally:
        counts = bootstrap.counters().snapshot()
        logging.getLogger(__name__).info(
            "stopped after %.0f s: %s", time.monotonic() - started, counts or "nothing ingested"
        )
        lifecycle.run_shutdown_hooks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
