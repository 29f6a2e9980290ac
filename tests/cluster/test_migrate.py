"""The migration Job and the functions' wait for it, on the session's real PostgreSQL: fresh databases are
created and migrated for every service, loms gets its stock, and the wait holds until the schema is there."""

from __future__ import annotations

import uuid

import pytest

from functions import migrate
from shared_lib import postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_databases(pg_server_dsn: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Each service pointed at a database that does not exist yet."""
    suffix = uuid.uuid4().hex[:8]
    server = postgres.Dsn.parse(pg_server_dsn)
    dsns = {s: server.with_database(f"{s}_job_{suffix}").url() for s in migrate.PLANS}
    monkeypatch.setenv("CART_DATABASE_URL", dsns["cart"])
    monkeypatch.setenv("LOMS_SHARD_DSNS", dsns["loms"])
    monkeypatch.setenv("NOTIFIER_DATABASE_URL", dsns["notifier"])
    monkeypatch.setenv("ORDERS_DATABASE_URL", dsns["orders"])
    return dsns


def test_the_wait_gives_up_on_an_unmigrated_database_and_passes_once_the_job_ran(
    fresh_databases: dict[str, str],
) -> None:
    assert migrate.missing(migrate.PLANS["cart"]) == migrate.PLANS["cart"].expected()
    assert migrate.main(["--wait", "--service", "cart", "--timeout", "0.3", "--interval", "0.1"]) == 1
    assert migrate.main([]) == 0
    assert migrate.main(["--wait", "--timeout", "120"]) == 0  # migrated: passes at its first look
    for plan in migrate.PLANS.values():
        assert migrate.missing(plan) == set()
        assert any(name.startswith(f"{plan.service}/") for name in plan.expected()), plan.service


def stock_rows(dsn: str) -> int:
    conn = postgres.connect(postgres.Dsn.parse(dsn))
    try:
        ((count,),) = conn.run("SELECT count(*) FROM stocks")
    finally:
        conn.close()
    return int(count)


def test_the_job_seeds_the_stock_and_can_run_again(fresh_databases: dict[str, str]) -> None:
    assert migrate.main(["--service", "loms"]) == 0
    seeded = stock_rows(fresh_databases["loms"])
    assert seeded > 0
    assert migrate.main(["--service", "loms"]) == 0  # a second Job (a redeploy) changes nothing
    assert stock_rows(fresh_databases["loms"]) == seeded
