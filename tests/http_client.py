"""The tests' plain HTTP call to a real port: (status, body bytes), an error status included, never raised."""

from __future__ import annotations

import urllib.error
import urllib.request


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """Raises OSError only when nothing answers (connection refused, timeout)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
