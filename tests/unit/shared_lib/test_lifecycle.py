"""shared_lib.lifecycle.Current: the composition root a service's handlers use on every request."""

from __future__ import annotations

import threading

from shared_lib.lifecycle import Current


class Root:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_built_root_is_handed_out_without_the_lock_and_a_replaced_one_is_closed() -> None:
    """root() runs on every request: once the root is built it takes no lock (under gevent the lock is
    gevent's, thousands of instructions a turn), so it answers while another thread holds the lock."""
    current: Current[[], Root] = Current(Root, Root.close)
    first = current.root()
    assert current.root() is first
    held, release = threading.Event(), threading.Event()
    answers: list[Root] = []

    def holder() -> None:
        with current._lock:
            held.set()
            release.wait(120)  # longer than the reader is waited for

    locked = threading.Thread(target=holder)
    locked.start()
    assert held.wait(30)
    reader = threading.Thread(target=lambda: answers.append(current.root()))
    reader.start()
    reader.join(10)
    waited = reader.is_alive()
    release.set()
    locked.join(30)
    assert not waited, "root() waited for the lock"
    assert answers == [first]
    second = current.bootstrap()
    assert current.root() is second and first.closed and not second.closed
    current.reset()
    assert second.closed and current.root() not in (first, second)
