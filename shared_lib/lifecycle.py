"""Process lifecycle: what a function's process must do when it is told to stop.

A tiny registry: composition roots register closers (`on_shutdown(pool.close)`, `on_shutdown(producer.close)`)
when they build a resource; the server runs them once, last registered first, once in-flight requests drained.
Nothing here knows about any service, server or driver.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar, cast

log = logging.getLogger(__name__)

Hook = Callable[[], object]
T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_hooks: list[Hook] = []
_stopping = threading.Event()


def program_starting() -> None:
    """What every process entry point of the shop (functions.entrypoint, the ingest and relay workers) does
    first when started as a program, before the imports that build pydantic models: pydantic would otherwise
    scan the entry points of every installed distribution for plugins when it builds its first model, a scan
    of all their metadata at each start (~3% of an ingest run's samples). The shop has none. A value already
    in the environment is kept."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def on_shutdown(hook: Hook) -> Hook:
    """Run `hook` when the process shuts down (after draining). Returns it: it works as a decorator too."""
    with _lock:
        _hooks.append(hook)
    return hook


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets: what a long-running worker's main loop waits on or polls.
    Call it from the main thread (signal handlers can only be installed there)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def begin_shutdown() -> None:
    """Mark the process as stopping: readiness turns false while in-flight requests drain."""
    _stopping.set()


def shutting_down() -> bool:
    return _stopping.is_set()


def run_shutdown_hooks() -> list[BaseException]:
    """Run every registered hook once, last registered first; a failing hook is logged and the rest still run.

    Returns the errors raised (empty when every hook succeeded). Safe to call more than once: hooks that ran
    are forgotten, so a second call runs only hooks registered since.
    """
    begin_shutdown()
    with _lock:
        hooks = list(reversed(_hooks))
        _hooks.clear()
    errors: list[BaseException] = []
    for hook in hooks:
        try:
            hook()
        except Exception as exc:  # one closer failing must not keep the others from running
            log.exception("shutdown hook %r failed", hook)
            errors.append(exc)
    return errors


class Current(Generic[P, T]):
    """The one composition root a process's handlers use: built by `make()` on first use, or the one
    `bootstrap` made (the root it replaces is closed with `close`). A service's bootstrap module exposes
    `bootstrap`, `root` and `reset` of one of these."""

    def __init__(self, make: Callable[P, T], close: Callable[[T], object] | None = None) -> None:
        self._make = make
        self._close = close
        self._lock = threading.Lock()
        self._current: T | None = None

    def root(self) -> T:
        """The root in use: the last one `bootstrap` made, else one from the environment."""
        current = self._current  # once built, read without the lock: one attribute read, on every request
        if current is not None:  # (under gevent the lock is gevent's, thousands of instructions a turn)
            return current
        with self._lock:
            if self._current is None:
                self._current = cast(Callable[[], T], self._make)()
            return self._current

    def bootstrap(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """A root on these dependencies (the rest from its settings, else the environment), made the one in
        use; the previous one is closed."""
        made = self._make(*args, **kwargs)
        self._replace(made)
        return made

    def reset(self) -> None:
        """Close and forget the current root: the next use builds one from the environment as it is then."""
        self._replace(None)

    def _replace(self, new: T | None) -> None:
        with self._lock:
            old, self._current = self._current, new
        if old is not None and self._close is not None:
            self._close(old)


def reset() -> None:
    """Forget every hook and the stopping mark (tests only)."""
    with _lock:
        _hooks.clear()
    _stopping.clear()
