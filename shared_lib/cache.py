"""Caches for any function: a Memcached client, an in-process twin, and `load_through` (stampede-safe).

A cache is never the source of truth and never breaks a request: every Memcached failure is logged and
becomes a miss or a no-op. Values are JSON, stored serialised, so a hit returns a fresh copy; an
`EncodedCache` also hands out and takes the serialised bytes themselves (`get_encoded`, `set_encoded`,
`load_through_encoded`), for a caller that answers with them as they are.
Each cache has a name: its lookups are counted as hits and misses under it, and each Memcached call is a span
when tracing is on; an in-process cache's call is a dict operation, not a round trip: no span, its reads noted
on the enclosing span instead (`shop.cache.<name>`). Nothing service-specific here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from shared_lib import lifecycle
from shared_lib.observability import metrics, tracing

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
LOCK_SUFFIX = ":loading"  # load_through's lock keys: looking one up is coordination, not a cache lookup

MAX_TTL_SECONDS = 30 * 24 * 3600  # memcached reads a larger expiry as an absolute unix time
_MAX_KEY_LENGTH = 200  # memcached allows 250 bytes; longer keys are hashed


class Cache(Protocol):
    """JSON values under string keys, each with a TTL in seconds. None is never a value: it means a miss."""

    def get(self, key: str) -> Any | None: ...

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]: ...  # only the keys found

    def set(self, key: str, value: Any, ttl: float) -> None: ...

    def add(self, key: str, value: Any, ttl: float) -> bool | None:
        """Store only if the key is absent: True stored, False it was there, None the cache did not answer."""
        ...

    def delete(self, key: str) -> None: ...


class EncodedCache(Cache, Protocol):
    """A Cache that also serves a value as the bytes it stores: `encode(value)`, never decoded on the way."""

    def get_encoded(self, key: str) -> bytes | None: ...

    def set_encoded(self, key: str, data: bytes, ttl: float) -> None:
        """Store `data`, which must be `encode(value)` of a value (the caller encoded it)."""
        ...

    def set_many_encoded(self, items: Mapping[str, bytes], ttl: float) -> None:
        """set_encoded of each key's data, in one call (one round trip per Memcached server)."""
        ...


def encode(value: Any) -> bytes:
    if value is None:
        raise ValueError("None cannot be cached: it means a miss")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes | str) -> Any:
    return json.loads(data)


def safe_key(key: str) -> str:
    """A memcached-safe key: printable ASCII without spaces, short; anything else is hashed (stable)."""
    if len(key) <= _MAX_KEY_LENGTH and key.isascii() and key.isprintable() and " " not in key:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _expiry(ttl: float) -> int:
    return max(1, min(MAX_TTL_SECONDS, math.ceil(ttl)))


def count_lookups(cache: str, hits: int, misses: int) -> None:
    """Count lookups of a named cache (any cache: the shared ones here, a service's own in-process one)."""
    if hits:
        metrics.CACHE_REQUESTS.labels(cache, "hit").inc(hits)
    if misses:
        metrics.CACHE_REQUESTS.labels(cache, "miss").inc(misses)


def _count_local(cache: str, hits: int, misses: int) -> None:
    """count_lookups of an in-process cache, whose calls are no spans: when the enclosing span is recorded, it
    says `shop.cache.<name>`: hit, miss or partial (some keys of a get_many found), of its last read there."""
    count_lookups(cache, hits, misses)
    if hits or misses:
        tracing.note(f"shop.cache.{cache}", "miss" if not hits else "partial" if misses else "hit")


def _counted_keys(keys: Iterable[str]) -> int:
    return sum(1 for key in keys if not key.endswith(LOCK_SUFFIX))


def traced(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A span per call of a cache method (its instance has `name` and `system`), when tracing is on."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            backend = tracing.backend()
            if isinstance(backend, tracing.NoopBackend):
                return method(*args, **kwargs)
            cache = args[0]
            attributes: dict[str, tracing.Attribute] = {
                "db.system.name": getattr(cache, "system", "cache"),
                "db.operation.name": operation,
                "shop.cache": getattr(cache, "name", ""),
            }
            with backend.span(f"cache {operation}", "client", attributes):
                return method(*args, **kwargs)

        return wrapper

    return decorate


# --- the in-process cache ------------------------------------------------------------------------------


class InProcessCache:
    """A thread-safe TTL cache in this process: the fallback when there is no Memcached, the tests' twin, and
    a service's own tier in front of Memcached.

    Bounded by `max_entries` and by `max_bytes` of stored (encoded) values: beyond either, the least recently
    used entries go first (a read or a write makes an entry the most recent); a value larger than `max_bytes`
    alone is not kept. `clock` is injectable for tests.
    """

    system = "in-process"

    def __init__(
        self,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        name: str = "in-process",
        max_bytes: int | None = None,
    ) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0  # the stored values' total length
        self._lock = threading.Lock()

    @property
    def size(self) -> tuple[int, int]:
        """(entries, bytes of values) held now, expired ones not yet dropped included."""
        with self._lock:
            return len(self._entries), self._bytes

    def _live(self, key: str) -> bytes | None:  # with the lock held
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, data = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return data

    def _read(self, key: str) -> bytes | None:
        """A live entry's bytes, made the most recent, or None. A hit takes no lock: it is one get and one
        move_to_end of the OrderedDict, each a single operation under the GIL that never yields to another
        greenlet (an entry evicted between the two is answered as it was a moment before). Under gevent the
        lock is gevent's, thousands of instructions a turn on every hit. A miss or an expired entry (dropped
        then) is looked at again under the lock."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry[0]:
            with contextlib.suppress(KeyError):
                self._entries.move_to_end(key)
            return entry[1]
        with self._lock:
            return self._live(key)

    def _drop(self, key: str) -> None:  # with the lock held
        _, data = self._entries.pop(key)
        self._bytes -= len(data)

    def _store(self, key: str, data: bytes, ttl: float) -> None:  # with the lock held
        if key in self._entries:
            self._drop(key)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            return
        self._entries[key] = (self._clock() + min(ttl, MAX_TTL_SECONDS), data)
        self._bytes += len(data)
        self._evict()

    def _evict(self) -> None:  # with the lock held
        while len(self._entries) > self.max_entries or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        ):
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def get(self, key: str) -> Any | None:
        data = self._read(key)
        if not key.endswith(LOCK_SUFFIX):
            _count_local(self.name, int(data is not None), int(data is None))
        return None if data is None else decode(data)

    def get_encoded(self, key: str) -> bytes | None:
        data = self._read(key)
        _count_local(self.name, int(data is not None), int(data is None))
        return data

    def set_encoded(self, key: str, data: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._store(key, data, ttl)

    def set_many_encoded(self, items: Mapping[str, bytes], ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            for key, data in items.items():
                self._store(key, data, ttl)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        return {key: decode(data) for key, data in self._found(keys).items()}

    def get_many_encoded(self, keys: Sequence[str]) -> dict[str, bytes]:
        """get_many's values as the bytes stored (the same object on every hit of one entry), not decoded."""
        return self._found(keys)

    def _found(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = {key: data for key in keys if (data := self._read(key)) is not None}
        _count_local(self.name, len(found), _counted_keys(dict.fromkeys(keys)) - len(found))
        return found

    def set(self, key: str, value: Any, ttl: float) -> None:
        data = encode(value)
        if ttl <= 0:
            return
        with self._lock:
            self._store(key, data, ttl)

    def add(self, key: str, value: Any, ttl: float) -> bool | None:
        data = encode(value)
        with self._lock:
            if self._live(key) is not None:
                return False
            if ttl > 0:
                self._store(key, data, ttl)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)


# --- Memcached -----------------------------------------------------------------------------------------


def parse_servers(servers: str | Iterable[str]) -> list[tuple[str, int]]:
    """`host:port,host:port` (or an iterable of `host:port`) -> [(host, port)]; the port defaults to 11211."""
    items = servers.replace(" ", ",").split(",") if isinstance(servers, str) else list(servers)
    parsed = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "11211")
        if not host or not port.isdigit():
            raise ValueError(f"a memcached server is host:port, not {item!r}")
        parsed.append((host.strip("[]"), int(port)))
    return parsed


_MISSED = object()  # what _call returns when memcached did not answer


def node_score(text: str, seed: int) -> int:
    """The rendezvous score of one "node-key" pair (RendezvousHash's hash_function): BLAKE2b, in C, about
    1 µs. pymemcache's default, murmur3 in pure Python, cost ~55 µs per node on every lookup (a get_order hit
    spent more CPU choosing its server than waiting for it). A change of score moves keys between servers:
    during a rollout, old and new replicas miss each other's entries for a while, nothing worse (a cache is
    never the source of truth)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=seed.to_bytes(8, "big"))
    return int.from_bytes(digest.digest(), "big")


class MemcachedCache:
    """Memcached through pymemcache's HashClient: a pooled client per server, keys spread by rendezvous
    hashing.

    Every failure is logged and becomes a miss or a no-op. A server that fails to connect or answer leaves
    the ring for `retry_after` seconds (HashClient's dead_timeout, with no retry attempts before it), so an
    outage costs one timeout, not one per call; meanwhile its keys go to the other servers, and with none
    left every call is a miss. HashClient's failure bookkeeping takes no lock: threads racing on a failing
    server can make it raise, which is a miss like any other failure.
    """

    system = "memcached"

    def __init__(
        self,
        servers: str | Iterable[str],
        *,
        prefix: str = "",
        connect_timeout: float = 0.2,
        timeout: float = 0.2,
        pool_size: int = 32,
        retry_after: float = 1.0,
        name: str = "",
    ) -> None:
        addresses = parse_servers(servers)
        if not addresses:
            raise ValueError("MemcachedCache needs at least one server")
        self.name = name or ("memcached-" + prefix.strip(":") if prefix.strip(":") else "memcached")
        self.prefix = prefix
        self.retry_after = retry_after
        self._client = HashClient(
            addresses,
            hasher=functools.partial(RendezvousHash, hash_function=node_score),
            connect_timeout=connect_timeout,
            timeout=timeout,
            no_delay=True,
            use_pooling=True,
            max_pool_size=pool_size,
            retry_attempts=0,  # out of the ring on its first failure …
            dead_timeout=retry_after,  # … and back after this long
            ignore_exc=False,  # failures are told apart from answers (add: None, not False)
            default_noreply=False,  # add must say whether it stored; set must say it failed
        )

    def _key(self, key: str) -> str:
        return safe_key(self.prefix + key)

    def _call(self, what: str, fn: Callable[[HashClient], Any]) -> Any:
        """The answer, or _MISSED when memcached did not give one (logged)."""
        try:
            return fn(self._client)
        except OSError as exc:  # refused, reset, timed out: HashClient has taken the server out
            log.warning("memcached is unavailable (%s: %s); serving without that server", what, exc)
        except MemcacheUnexpectedCloseError:
            log.warning("memcached closed the connection (%s); serving without it", what)
        except MemcacheError as exc:  # refused this item (too large, bad input), or no server left
            log.warning("memcached did not serve %s: %s", what, exc)
        except Exception:  # HashClient's unlocked bookkeeping raced; the cache never breaks a request
            log.exception("memcached client failed on %s", what)
        return _MISSED

    @staticmethod
    def _decode(key: str, data: Any) -> Any | None:
        try:
            return decode(data)
        except (ValueError, UnicodeDecodeError):
            log.warning("memcached held a value that is not JSON under %s; treated as a miss", key)
            return None

    @traced("get")
    def get(self, key: str) -> Any | None:
        mkey = self._key(key)
        data = self._call("get", lambda c: c.get(mkey))
        value = None if data is None or data is _MISSED else self._decode(key, data)
        if not key.endswith(LOCK_SUFFIX):
            count_lookups(self.name, int(value is not None), int(value is None))
        return value

    @traced("get")
    def get_encoded(self, key: str) -> bytes | None:
        """The stored bytes, unchecked: only this shop's `set`/`set_encoded` write under its keys."""
        mkey = self._key(key)
        data = self._call("get", lambda c: c.get(mkey))
        found = isinstance(data, bytes)
        count_lookups(self.name, int(found), int(not found))
        return data if found else None

    @traced("set")
    def set_encoded(self, key: str, data: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        mkey = self._key(key)
        self._call("set", lambda c: c.set(mkey, data, expire=_expiry(ttl), noreply=False))

    @traced("set_many")
    def set_many_encoded(self, items: Mapping[str, bytes], ttl: float) -> None:
        if ttl <= 0 or not items:
            return
        mapped = {self._key(key): data for key, data in items.items()}
        self._call("set_many", lambda c: c.set_many(mapped, expire=_expiry(ttl), noreply=False))

    @traced("get_many")
    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        wanted = {self._key(key): key for key in keys}
        result = self._call("get_many", lambda c: c.get_many(list(wanted)))
        found: dict[str, Any] = {}
        for mkey, data in ({} if result is _MISSED else result).items():
            value = self._decode(wanted[mkey], data)
            if value is not None:
                found[wanted[mkey]] = value
        count_lookups(self.name, len(found), _counted_keys(dict.fromkeys(keys)) - len(found))
        return found

    @traced("set")
    def set(self, key: str, value: Any, ttl: float) -> None:
        data = encode(value)
        if ttl <= 0:
            return
        mkey = self._key(key)
        self._call("set", lambda c: c.set(mkey, data, expire=_expiry(ttl), noreply=False))

    @traced("add")
    def add(self, key: str, value: Any, ttl: float) -> bool | None:
        data = encode(value)
        mkey = self._key(key)
        stored = self._call("add", lambda c: c.add(mkey, data, expire=_expiry(ttl), noreply=False))
        return None if stored is _MISSED else bool(stored)

    @traced("delete")
    def delete(self, key: str) -> None:
        mkey = self._key(key)
        self._call("delete", lambda c: c.delete(mkey, noreply=False))

    def close(self) -> None:
        self._client.close()


# --- load-through with stampede protection -------------------------------------------------------------


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    hit: bool = False
    error: BaseException | None = None


_flights: dict[tuple[int, str, bool], _Flight] = {}
_flights_lock = threading.Lock()


def shared_or_local(
    servers: str, prefix: str, local_name: str = "in-process", max_entries: int = 100_000
) -> MemcachedCache | InProcessCache:
    """Memcached at `servers` (comma-separated; its clients closed at shutdown), or, when none are given,
    a cache in this process named `local_name` in metrics, of at most `max_entries`."""
    servers = servers.strip()
    if not servers:
        return InProcessCache(max_entries, name=local_name)
    shared = MemcachedCache(servers, prefix=prefix)
    lifecycle.on_shutdown(shared.close)
    return shared


@dataclass(frozen=True, slots=True)
class _Way:
    """How load_through reads a value and stores a loaded one: decoded, or as its encoded bytes."""

    read: Callable[[str], Any]
    store: Callable[[str, Any, float], Any]  # (key, loaded value, ttl) -> what the caller is given
    encoded: bool  # a flight's followers get what its leader got: one kind of value per flight


def _decoded(cache: Cache) -> _Way:
    def store(key: str, loaded: Any, ttl: float) -> Any:
        value = decode(encode(loaded))
        cache.set(key, value, ttl)
        return value

    return _Way(cache.get, store, encoded=False)


def _encoded(cache: EncodedCache) -> _Way:
    def store(key: str, loaded: Any, ttl: float) -> bytes:
        data = encode(loaded)
        cache.set_encoded(key, data, ttl)
        return data

    return _Way(cache.get_encoded, store, encoded=True)


def load_through(
    cache: Cache,
    key: str,
    ttl: float,
    loader: Callable[[], Any],
    *,
    lock_ttl: float = 5.0,
    wait: float = 0.5,
    poll: float = 0.005,
    follower_timeout: float = 30.0,
) -> tuple[Any, bool]:
    """(value, hit): the cached value, else `loader()`'s result, stored for `ttl` seconds.

    Concurrent misses for one key make one loader call. In this process the first caller loads and the others
    wait for its result (or its error). Across replicas the loader holds a short-lived lock key (memcached
    `add`); the others poll the cache for up to `wait` seconds, then load themselves — as does everyone when
    the cache does not answer. The value is returned JSON round-tripped, as a hit would return it; a None
    from the loader is returned and not cached.
    """
    cached = cache.get(key)
    if cached is not None:
        return cached, True
    return _load_missed(cache, _decoded(cache), key, ttl, loader, lock_ttl, wait, poll, follower_timeout)


def load_through_encoded(
    cache: EncodedCache,
    key: str,
    ttl: float,
    loader: Callable[[], Any],
    *,
    lock_ttl: float = 5.0,
    wait: float = 0.5,
    poll: float = 0.005,
    follower_timeout: float = 30.0,
) -> tuple[bytes | None, bool]:
    """load_through, with the value as its encoded JSON bytes (`encode(value)`): a hit is the stored bytes,
    never decoded; a load is encoded once, stored and returned. None when the loader returned None."""
    cached = cache.get_encoded(key)  # a hit costs nothing more than this
    if cached is not None:
        return cached, True
    way = _encoded(cache)
    data, hit = _load_missed(cache, way, key, ttl, loader, lock_ttl, wait, poll, follower_timeout)
    return data, hit


def _load_missed(
    cache: Cache,
    way: _Way,
    key: str,
    ttl: float,
    loader: Callable[[], Any],
    lock_ttl: float,
    wait: float,
    poll: float,
    follower_timeout: float,
) -> tuple[Any, bool]:
    """load_through after its first read of `key` missed: one load per key in this process at a time."""
    ident = (id(cache), key, way.encoded)
    with _flights_lock:
        flight = _flights.get(ident)
        leader = flight is None
        if flight is None:
            flight = _flights[ident] = _Flight()
    if not leader:
        log.debug("cache key %s: waiting for this process's load of it", key)  # decided: it follows
        if flight.done.wait(follower_timeout):
            if flight.error is not None:
                raise flight.error
            return flight.value, flight.hit
        log.warning("the load of cache key %s took over %.0fs; loading again", key, follower_timeout)
        return _load_and_store(way, key, ttl, loader), False
    try:
        flight.value, flight.hit = _load_across_replicas(cache, way, key, ttl, loader, lock_ttl, wait, poll)
        return flight.value, flight.hit
    except BaseException as exc:
        flight.error = exc
        raise
    finally:
        with _flights_lock:
            _flights.pop(ident, None)
        flight.done.set()


def _load_and_store(way: _Way, key: str, ttl: float, loader: Callable[[], Any]) -> Any:
    loaded = loader()
    return None if loaded is None else way.store(key, loaded, ttl)


def _load_across_replicas(
    cache: Cache,
    way: _Way,
    key: str,
    ttl: float,
    loader: Callable[[], Any],
    lock_ttl: float,
    wait: float,
    poll: float,
) -> tuple[Any, bool]:
    lock_key = key + LOCK_SUFFIX
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    delay = poll
    while True:
        taken = cache.add(lock_key, token, lock_ttl)
        if taken is None:  # the cache does not answer: nobody can coordinate, nothing to wait for
            return _load_and_store(way, key, ttl, loader), False
        if taken:
            try:
                cached = way.read(key)  # stored by another replica between our miss and our lock
                if cached is not None:
                    return cached, True
                return _load_and_store(way, key, ttl, loader), False
            finally:
                if cache.get(lock_key) == token:  # our lock may have expired and been taken by another
                    cache.delete(lock_key)
        if time.monotonic() >= deadline:
            log.info("cache key %s: another replica is slow to load it; loading here too", key)
            return _load_and_store(way, key, ttl, loader), False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        cached = way.read(key)
        if cached is not None:
            return cached, True
