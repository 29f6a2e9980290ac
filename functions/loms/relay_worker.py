"""`python -m functions.loms.relay_worker`: loms' outbox relay as a long-running process.

It drains every shard's outbox, then sleeps until PostgreSQL NOTIFYs a new event (or LOMS_RELAY_POLL_SECONDS
pass) and drains again, so an event reaches Kafka (or LOMS_EVENT_SINKS) within milliseconds of its commit.
One relay per shard works at a time (a session advisory lock): a second replica only waits, and the
`relay_outbox` cron function, which the PingSource fires every minute, is the backstop while none runs.

The dev server runs it beside loms (its metrics then show on loms' port, through the shared
PROMETHEUS_MULTIPROC_DIR); the cluster runs it as the Deployment `loms-outbox-relay` with `--port`, which
adds GET /healthz (503 once the loop has not gone round for --stale-after seconds: the liveness probe restarts
it) and GET /metrics. SIGTERM or SIGINT: it finishes the batch in flight, closes its connections and exits 0.
"""

from __future__ import annotations

if __name__ == "__main__":  # the worker starting, not an import
    from shared_lib import lifecycle

    lifecycle.program_starting()  # before loms' settings models are built (imported below)

import argparse
import logging
import sys
from typing import Any

from functions.loms import bootstrap
from functions.loms.service import OutboxRelay
from shared_lib import lifecycle
from shared_lib.observability import server as observed

log = logging.getLogger(__name__)
STALE_AFTER_SECONDS = 120.0  # a pass takes at most a poll (≤ 60 s), a backoff (≤ 5 s) or a publish's timeouts


def health(relay: OutboxRelay, stale_after: float) -> tuple[bool, dict[str, Any]]:
    """Alive while the relay's loop went round within `stale_after` seconds (or is still starting)."""
    if relay.last_pass is None:
        return True, {"last_pass_seconds_ago": None}
    ago = relay.clock() - relay.last_pass
    return ago <= stale_after, {"last_pass_seconds_ago": round(ago, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loms' outbox relay until SIGTERM")
    parser.add_argument("--port", type=int, default=0, help="serve /healthz and /metrics here (0: do not)")
    parser.add_argument(
        "--stale-after", type=float, default=STALE_AFTER_SECONDS, help="seconds; see /healthz"
    )
    args = parser.parse_args(argv)
    observed.setup("loms")  # its spans and log lines say loms
    stop = lifecycle.stop_on_signals()
    relay = bootstrap.relay()
    endpoints = None
    if args.port:
        endpoints = observed.WorkerEndpoints(args.port, lambda: health(relay, args.stale_after))
        log.info("relay probes and metrics on port %d", endpoints.port)
    try:
        report = bootstrap.relay_forever(stop, relay)
        log.info("relay stopped: %d events published", report.published)
    finally:
        if endpoints is not None:
            endpoints.close()
        lifecycle.run_shutdown_hooks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
