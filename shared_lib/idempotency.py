"""Idempotency-Key support backed by PostgreSQL: a repeated request returns the first reply.

A transaction-scoped advisory lock on (scope, key) serialises concurrent repeats, so the action runs once and
the others wait and read its reply. Only non-5xx replies are remembered: a transient failure may be retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from shared_lib.errors import IdempotencyKeyReusedError
from shared_lib.postgres import ConnectionPool
from shared_lib.web import Reply


class PgIdempotencyStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def run(self, scope: str, key: str, fingerprint: str, action: Callable[[], Reply]) -> Reply:
        lock_id = int.from_bytes(hashlib.sha256(f"{scope}\0{key}".encode()).digest()[:8], "big", signed=True)
        with self.pool.transaction() as conn:
            conn.run("SELECT pg_advisory_xact_lock(:id)", id=lock_id)
            rows = conn.run(
                "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = :s AND key = :k",
                s=scope,
                k=key,
            )
            if rows:
                stored_fingerprint, status, body = rows[0]
                if stored_fingerprint != fingerprint:
                    raise IdempotencyKeyReusedError("this Idempotency-Key was used with a different request")
                return Reply(status, None if body is None else json.loads(body))
            reply = action()
            if reply.status < 500:
                conn.run(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body)"
                    " VALUES (:s, :k, :f, :st, :b)",
                    s=scope,
                    k=key,
                    f=fingerprint,
                    st=reply.status,
                    b=None if reply.body is None else json.dumps(reply.body, ensure_ascii=False),
                )
            return reply
