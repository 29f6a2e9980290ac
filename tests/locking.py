"""Whether a call waits for a lock: held by one thread while the call runs in another."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def waited_for(lock: Any, call: Callable[[], object]) -> bool:
    """Run `call` in a thread while another holds `lock`; whether it was still running 10 s in (waiting for
    the lock, which is held for 120 s unless the call is done). The lock is released and both threads joined
    before this returns."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(120)  # longer than the call is waited for

    locked = threading.Thread(target=holder)
    locked.start()
    assert held.wait(30)
    caller = threading.Thread(target=call)
    caller.start()
    caller.join(10)
    waited = caller.is_alive()
    release.set()
    locked.join(30)
    caller.join(30)
    return waited
