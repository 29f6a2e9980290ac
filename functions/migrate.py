"""Database migrations for a deployment: the cluster's migration Job, and the wait its functions start behind.

`python -m functions.migrate` creates every service database that is missing, applies its migrations through
the service's own `migrate()` (cart: sql/shared + sql/cart), then loads loms' seed stock (never resetting it).
`python -m functions.migrate --wait --service cart` polls `schema_migrations` until every migration file the
image carries for that service is recorded: the functions' initContainer, so no pod serves an old schema.
Configuration comes from each service's settings class (CART_DATABASE_URL, LOMS_SHARD_DSNS, NOTIFIER_…).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from shared_lib import postgres

SQL = Path(__file__).resolve().parent.parent / "sql"


@dataclass(frozen=True, slots=True)
class Plan:
    """How one service's databases are found, migrated and seeded."""

    service: str
    dsns: Callable[[], list[str]]
    migrate: Callable[[], object]
    seed: Callable[[], object] | None = None

    def expected(self) -> set[str]:
        """The names `shared_lib.postgres.migrate` records for this service's migration files."""
        return {
            f"{directory.name}/{path.name}"
            for directory in (SQL / "shared", SQL / self.service)
            for path in directory.glob("*.sql")
        }


def _cart_dsns() -> list[str]:
    from functions.cart.settings import CartSettings

    return [CartSettings().database_url]


def _cart_migrate() -> object:
    return postgres.migrate(_cart_dsns()[0], [SQL / "shared", SQL / "cart"])


def _loms_dsns() -> list[str]:
    from functions.loms.settings import LomsSettings

    return LomsSettings().shards()


def _loms_migrate() -> object:
    from functions.loms import bootstrap

    return bootstrap.migrate()


def _loms_seed() -> object:
    from functions.loms import bootstrap

    return bootstrap.seed_stock()


def _notifier_dsns() -> list[str]:
    from functions.notifier.settings import NotifierSettings

    return [NotifierSettings().database_url]


def _notifier_migrate() -> object:
    from functions.notifier import bootstrap

    return bootstrap.migrate()


def _orders_dsns() -> list[str]:
    from functions.orders.settings import OrdersSettings

    return [OrdersSettings().database_url]


def _orders_migrate() -> object:
    from functions.orders import bootstrap

    return bootstrap.migrate()


PLANS: dict[str, Plan] = {
    p.service: p
    for p in (
        Plan("cart", _cart_dsns, _cart_migrate),
        Plan("loms", _loms_dsns, _loms_migrate, seed=_loms_seed),
        Plan("notifier", _notifier_dsns, _notifier_migrate),
        Plan("orders", _orders_dsns, _orders_migrate),
    )
}


def _until(action: Callable[[], object], timeout: float, what: str) -> None:
    """Retry `action` until it succeeds (PostgreSQL may still be starting) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what}: still failing after {timeout:.0f}s ({type(exc).__name__})"
                ) from exc
            time.sleep(1.0)


def migrate(services: Iterable[str], timeout: float = 300.0) -> None:
    for name in services:
        plan = PLANS[name]
        for dsn in plan.dsns():
            database = postgres.Dsn.parse(dsn).database
            _until(functools.partial(postgres.ensure_database, dsn, database), timeout, database)
        applied = plan.migrate()
        print(f"{name}: migrated ({applied or 'nothing new'})", flush=True)
        if plan.seed is not None:
            print(f"{name}: seeded ({plan.seed()})", flush=True)


def missing(plan: Plan) -> set[str]:
    """Migrations of the service not yet recorded in one of its databases (all of them if unreachable)."""
    expected = plan.expected()
    absent: set[str] = set()
    for dsn in plan.dsns():
        try:
            conn = postgres.connect(postgres.Dsn.parse(dsn), timeout=2.0, application_name="migrate-wait")
        except Exception:
            return expected
        try:
            done = {row[0] for row in conn.run("SELECT name FROM schema_migrations")}
        except Exception:  # no table yet: nothing applied
            done = set()
        finally:
            conn.close()
        absent |= expected - done
    return absent


def wait(services: Iterable[str], timeout: float, interval: float = 1.0) -> bool:
    """Block until every named service's databases carry all its migrations; False on timeout."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    for name in services:
        plan = PLANS[name]
        while absent := missing(plan):
            now = time.monotonic()
            if now > deadline:
                print(f"{name}: gave up after {timeout:.0f}s; missing {sorted(absent)}", flush=True)
                return False
            if now - last_report > 5:
                print(f"{name}: waiting for migrations {sorted(absent)}", flush=True)
                last_report = now
            time.sleep(interval)
        print(f"{name}: schema is migrated", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Migrate the shop's databases, or wait until they are")
    parser.add_argument(
        "--service",
        action="append",
        choices=sorted(PLANS),
        help="only this service (repeatable; default all)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for the migrations instead of applying them"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (default 300)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between checks when waiting")
    args = parser.parse_args(argv)
    services = args.service or sorted(PLANS)
    if args.wait:
        return 0 if wait(services, args.timeout, args.interval) else 1
    migrate(services, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
