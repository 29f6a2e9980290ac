"""Bounded fan-out: run a function over items on a thread pool with at most `limit` calls in flight.

The first failure wins: work not yet started is never started, running work is told through a
threading.Event it may check, and the failure is re-raised. Each call runs in a copy of the caller's context
(contextvars), so the request's span and log ids follow the work into the pool's threads.
No knowledge of what the work is.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

_PENDING = object()


def map_bounded(
    fn: Callable[[T], R],
    items: Iterable[T],
    limit: int,
    *,
    cancel: threading.Event | None = None,
) -> list[R]:
    """[fn(item) for item in items], at most `limit` at a time, results in input order.

    `cancel` is set on the first error, so pass the same event into `fn` (a closure) to let running calls
    give up early (shared_lib.retry and shared_lib.ratelimit accept it). A pool of up to `limit` threads is
    made for this call and let go without waiting for calls that are still running.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    work = list(items)
    if not work:
        return []
    cancel = cancel if cancel is not None else threading.Event()
    pool = ThreadPoolExecutor(max_workers=min(limit, len(work)), thread_name_prefix="map_bounded")
    results: list[object] = [_PENDING] * len(work)
    running: dict[Future[R], int] = {}
    next_index = 0
    try:
        while next_index < len(work) or running:
            # work is handed to the pool only when a slot is free, so nothing queued needs cancelling later
            while next_index < len(work) and len(running) < limit and not cancel.is_set():
                context = contextvars.copy_context()  # one per call: a context runs in one thread at a time
                running[pool.submit(context.run, fn, work[next_index])] = next_index
                next_index += 1
            if not running:  # cancelled from outside before anything failed here
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=running.__getitem__):
                index = running.pop(future)
                error = future.exception()
                if error is not None:
                    cancel.set()
                    raise error
                results[index] = future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if any(r is _PENDING for r in results):  # `cancel` was set by the caller
        raise CancelledError()
    return cast(list[R], results)
