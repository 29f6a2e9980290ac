"""An in-memory Idempotency-Key store for handler tests: non-5xx replies remembered per (scope, key), as
shared_lib.idempotency.PgIdempotencyStore does (its own suite runs on real PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared_lib import web
from shared_lib.errors import IdempotencyKeyReusedError


class InMemoryIdempotencyStore:
    """A repeat gets the first reply; another body under the same key is a 422."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], tuple[str, web.Reply]] = {}
        self.lock = threading.Lock()

    def run(self, scope: str, key: str, fingerprint: str, action: Callable[[], web.Reply]) -> web.Reply:
        with self.lock:
            stored = self.replies.get((scope, key))
            if stored is not None:
                if stored[0] != fingerprint:
                    raise IdempotencyKeyReusedError("this Idempotency-Key was used with a different request")
                return stored[1]
            reply = action()
            if reply.status < 500:
                self.replies[(scope, key)] = (fingerprint, reply)
            return reply
