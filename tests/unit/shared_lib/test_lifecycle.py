"""shared_lib.lifecycle.Current: the composition root a service's handlers use on every request."""

from __future__ import annotations

from shared_lib.lifecycle import Current
from tests.locking import waited_for


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
    answers: list[Root] = []
    assert not waited_for(current._lock, lambda: answers.append(current.root())), "root() waited for the lock"
    assert answers == [first]
    second = current.bootstrap()
    assert current.root() is second and first.closed and not second.closed
    current.reset()
    assert second.closed and current.root() not in (first, second)
