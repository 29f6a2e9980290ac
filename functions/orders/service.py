"""The order viewer's use cases: ingest a batch of records (store the new orders in one transaction,
dead-letter the invalid and the conflicting ones), read an order through the caches, list the recent ones.
No Flask, no SQL, no Kafka, no environment.

A read is answered with the order's JSON as the caches hold it, already encoded: a stored order never changes
(a redelivery with another body is a CONFLICT, never an overwrite; nothing deletes orders), so its bytes are
the answer for as long as they are cached. A found order is kept in this process too (`local`, in front of
the shared cache that other replicas fill and read); a not-found one never is, as the order may arrive later.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from functions.orders.domain import (
    DeadLetter,
    EncodedOrder,
    OrderNotFoundError,
    OrderRejectedError,
    OrderSummary,
    Outcome,
    Submission,
    Verdict,
)
from functions.orders.ports import Counters, DeadLetters, OrderRepository
from shared_lib.cache import EncodedCache, load_through_encoded

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # part of every cache key: a change of the cached shape never reads old entries


def cache_key(order_uid: str) -> str:
    return f"order:f{CACHE_FORMAT}:{order_uid}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OrdersService:
    orders: OrderRepository
    dead_letters: DeadLetters
    cache: EncodedCache  # the shared tier (Memcached), or this process's only cache
    counters: Counters
    cache_ttl_seconds: float = 3600.0
    warm_cache: bool = True  # put each newly stored order in the cache, so its first read is a hit
    future_skew: timedelta = timedelta(minutes=5)  # how far in the future date_created may be (clock skew)
    recent_count: int = 8  # orders the page lists
    clock: Callable[[], datetime] = field(default=_now)
    local: EncodedCache | None = None  # found orders in this process, read before `cache`; None: no such tier

    def ingest(self, submissions: Sequence[Submission]) -> list[Verdict]:
        """Store the batch's new orders in one transaction and dead-letter the rest; one verdict per record.

        A redelivered order (same uid, same body) is a DUPLICATE and changes nothing; another body under a
        stored uid is a CONFLICT, dead-lettered, never an overwrite. When the database refuses the batch, each
        order is tried alone so that only the one it refuses is dead-lettered. Raises TransientError (the
        database or the dead-letter topic is unavailable): nothing may be acknowledged, the batch comes again,
        and its redelivery changes nothing that this attempt stored.
        """
        # per uid, the first order of the batch (the one that may be stored), encoded once: its fingerprint,
        # its rows and its cached bytes
        first: dict[str, EncodedOrder] = {}
        for submission in submissions:
            if submission.order is not None and submission.order.order_uid not in first:
                first[submission.order.order_uid] = EncodedOrder.of(submission.order)
        inserted, fingerprints, refused = self._store(list(first.values()))

        verdicts = []
        for submission in submissions:
            order = submission.order
            if order is None:
                verdicts.append(Verdict(submission.record, Outcome.INVALID, reason=submission.problem))
                continue
            uid = order.order_uid
            encoded = first[uid]
            if uid in refused:
                verdicts.append(Verdict(submission.record, Outcome.INVALID, uid, refused[uid]))
            elif encoded.order is order and uid in inserted:
                verdicts.append(Verdict(submission.record, Outcome.STORED, uid))
            elif fingerprints.get(uid) == (
                encoded.fingerprint if encoded.order is order else order.fingerprint
            ):
                verdicts.append(Verdict(submission.record, Outcome.DUPLICATE, uid))
            else:
                reason = f"conflict: order_uid {uid} is stored with a different body"
                verdicts.append(Verdict(submission.record, Outcome.CONFLICT, uid, reason))

        letters = [DeadLetter(v.record, v.reason) for v in verdicts if v.dead_lettered]
        self.dead_letters.send(letters)
        for outcome, count in Counter(verdict.outcome.value for verdict in verdicts).items():
            self.counters.increment(outcome, count)
        for letter in letters:
            log.warning("dead-lettered %s: %s", letter.record.where(), letter.reason)
        if self.warm_cache and inserted:  # the bytes stored are the bytes cached, in one round trip
            cached = {cache_key(uid): first[uid].data for uid in inserted}
            self.cache.set_many_encoded(cached, self.cache_ttl_seconds)
        return verdicts

    def _store(self, orders: list[EncodedOrder]) -> tuple[frozenset[str], dict[str, str], dict[str, str]]:
        """(inserted uids, stored fingerprint per uid, refused uid -> reason); one by one after a refusal."""
        if not orders:
            return frozenset(), {}, {}
        try:
            result = self.orders.store(orders)
            return result.inserted, result.fingerprints, {}
        except OrderRejectedError as exc:
            if len(orders) == 1:
                return frozenset(), {}, {orders[0].order_uid: exc.message}
            log.warning("the database refused a batch of %d orders; storing them one by one", len(orders))
        inserted: set[str] = set()
        fingerprints: dict[str, str] = {}
        refused: dict[str, str] = {}
        for order in orders:
            one, prints, bad = self._store([order])
            inserted |= one
            fingerprints.update(prints)
            refused.update(bad)
        return frozenset(inserted), fingerprints, refused

    def get(self, order_uid: str) -> tuple[bytes, bool]:
        """The order in the sample's shape as encoded JSON (shared_lib.cache.encode), and whether it came
        from a cache (this process's tier or the shared one). Raises OrderNotFoundError, TransientError (the
        database; a cache never fails a read: without it, reads go to the database)."""
        key = cache_key(order_uid)
        if self.local is not None:
            kept = self.local.get_encoded(key)
            if kept is not None:
                return kept, True

        def load() -> dict[str, object] | None:
            order = self.orders.get(order_uid)
            return None if order is None else order.to_json()

        body, hit = load_through_encoded(self.cache, key, self.cache_ttl_seconds, load)
        if body is None:
            raise OrderNotFoundError(order_uid)
        if self.local is not None:
            self.local.set_encoded(key, body, self.cache_ttl_seconds)
        return body, hit

    def recent(self) -> list[OrderSummary]:
        """The most recently ingested orders, newest first. Raises TransientError."""
        return self.orders.recent(self.recent_count) if self.recent_count else []
