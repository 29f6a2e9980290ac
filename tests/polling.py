"""The tests' one bounded-polling helper: wait for a condition, never sleep blindly, fail, never hang."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `check()` until it returns something truthy and return that; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or check}; last value: {value!r}")
        time.sleep(interval)
