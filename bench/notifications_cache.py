"""list_notifications: a cache hit (Memcached, same user and period) next to a miss (PostgreSQL), through the
dev server. A user with 200 notifications; misses ask a new period each time, hits repeat one period.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time

from bench.common import percentile, report
from bench.stack import shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with shop(("loms", "notifier"), real_events=True) as running:
        loms = http.client.HTTPConnection("127.0.0.1", int(running.url("loms").rsplit(":", 1)[1]), timeout=30)
        for _ in range(100):  # 100 orders of one user: new + awaiting payment = 200 notifications
            loms.request(
                "POST",
                "/order/create",
                json.dumps({"userId": 4242, "items": [{"sku": 139275865, "count": 1}]}),
            )
            assert loms.getresponse().read()
        notifier = http.client.HTTPConnection(
            "127.0.0.1", int(running.url("notifier").rsplit(":", 1)[1]), timeout=30
        )

        def fetch(start_minute: int) -> tuple[float, str, int]:
            period = f"from=2000-01-01T00:{start_minute:02d}:00Z&to=2100-01-01T00:00:00Z"
            path = f"/notifications?user_id=4242&{period}"
            started = time.perf_counter()
            notifier.request("GET", path)
            response = notifier.getresponse()
            items = len(json.loads(response.read())["items"])
            return (time.perf_counter() - started) * 1000, response.getheader("X-Cache", ""), items

        deadline = time.monotonic() + 60
        while fetch(59)[2] < 200 and time.monotonic() < deadline:  # wait until every event was notified
            time.sleep(0.2)
        misses: list[float] = []
        hits: list[float] = []
        for i in range(args.requests):
            took, cache, items = fetch(i % 59)  # 59 distinct periods, each asked once cold…
            (misses if cache == "miss" else hits).append(took)
            assert items == 200
        hit_only = [fetch(0)[0] for _ in range(args.requests)]  # …then one period, always warm
    report(
        "list_notifications, 200 items: Memcached hit vs PostgreSQL miss",
        {
            "miss requests": len(misses),
            "miss p50 ms": statistics.median(misses),
            "miss p99 ms": percentile(misses, 99),
            "hit requests": len(hit_only),
            "hit p50 ms": statistics.median(hit_only),
            "hit p99 ms": percentile(hit_only, 99),
            "miss p50 / hit p50": statistics.median(misses) / statistics.median(hit_only),
        },
    )


if __name__ == "__main__":
    main()
