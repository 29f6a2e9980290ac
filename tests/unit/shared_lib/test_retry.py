"""retry: tries in all, which errors are retried, the backoff between tries, and cancellation."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from shared_lib.errors import TransientError
from shared_lib.retry import Backoff, retry


class Throttled(TransientError):
    def __init__(self) -> None:
        super().__init__("429")


class Script:
    """Raises the given errors in turn, then returns 'ok'; counts the attempts."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def __call__(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_a_throttled_call_succeeds_on_its_third_try_after_growing_pauses() -> None:
    pauses: list[float] = []
    script = Script(Throttled(), Throttled())
    backoff = Backoff(0.1, 5, jitter=False)
    result = retry(script, tries=3, retry_on=Throttled, backoff=backoff, sleep=pauses.append)
    assert result == "ok"
    assert script.attempts == 3
    assert pauses == [0.1, 0.2]


def test_after_the_last_try_the_last_error_propagates() -> None:
    script = Script(Throttled(), Throttled(), Throttled(), Throttled())
    with pytest.raises(Throttled):
        retry(script, tries=3, retry_on=Throttled, sleep=lambda _: None)
    assert script.attempts == 3


def test_errors_not_named_are_not_retried() -> None:
    script = Script(TransientError("connection refused"))
    with pytest.raises(TransientError):
        retry(script, tries=3, retry_on=Throttled, sleep=lambda _: None)
    assert script.attempts == 1


def test_one_try_means_no_retry() -> None:
    script = Script(Throttled())
    with pytest.raises(Throttled):
        retry(script, tries=1, retry_on=Throttled, sleep=lambda _: None)
    assert script.attempts == 1
    with pytest.raises(ValueError):
        retry(script, tries=0)


def test_backoff_is_capped_and_jitter_keeps_at_least_half() -> None:
    backoff = Backoff(base=0.5, max=1.5, jitter=False)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]
    jittered = Backoff(base=1.0, max=10.0, jitter=True)
    assert jittered.delay(2, rng=lambda low, high: low) == 1.0
    assert jittered.delay(2, rng=lambda low, high: high) == 2.0
    assert all(1.0 <= jittered.delay(2) <= 2.0 for _ in range(100))


def test_cancelling_stops_the_pause_and_no_further_try_is_made() -> None:
    cancel = threading.Event()
    script = Script(Throttled(), Throttled())
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(CancelledError):  # a 1000 s pause: only the cancel can end it
        retry(script, tries=3, retry_on=Throttled, backoff=Backoff(1000, 1000, jitter=False), cancel=cancel)
    assert script.attempts == 1
