"""A tiny HTTP client for the e2e tests: JSON in, (status, JSON or None, headers) out."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
    request = urllib.request.Request(url, data=data, method=method, headers=sent)  # not urllib's form
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, payload, got = error.code, error.read(), dict(error.headers)
    return status, (json.loads(payload) if payload else None), got


def notifications(base: str, user: int) -> list[dict[str, Any]]:
    status, body, _ = call(
        "GET", f"{base}/notifications?user_id={user}&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
    )
    assert status == 200, body
    return list(body["items"])
