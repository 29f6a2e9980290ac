"""A thin pooled HTTP client for calls between functions: JSON in and out, timeouts, no hidden retries.

Connection failures and timeouts become TransientError here; what a status code means is the caller's call.
Every call is timed by target and status, is a client span when tracing is on, and carries the trace context
(`traceparent`, or `X-Amzn-Trace-Id` with X-Ray) to the peer.
Nothing service-specific: adapters build one client per peer and translate its answers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from shared_lib.errors import TransientError
from shared_lib.observability import metrics, tracing


class UnexpectedResponseError(Exception):
    """A peer answered in a way its contract does not allow: a bug on one side, not a hiccup (so a 500)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    peer: str = "the peer"

    def json(self) -> Any:
        """The body as JSON, or UnexpectedResponseError (never echoing the body)."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UnexpectedResponseError(f"{self.peer} answered {self.status} without JSON") from None

    def error_code(self) -> int | None:
        """The gRPC `code` of a contract error body, or None when the body is not one."""
        try:
            data = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        code = data.get("code") if isinstance(data, dict) else None
        return code if isinstance(code, int) and not isinstance(code, bool) else None


def target_of(name: str) -> str:
    """A metric label from a client's name: "the product service" -> "product-service"."""
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    if words[:1] == ["the"]:
        words = words[1:]
    return "-".join(words) or "peer"


class HttpClient:
    """Keep-alive connections to one base URL; thread-safe (urllib3 lends each call its own connection).

    Metrics and spans name the peer by its `target`, derived from `name` (`target_of`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "the peer",
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.target = target_of(name)
        # imported by the first client, not with this module: a function that never calls a peer (the
        # notifier's default log sink) does not pay for urllib3 at its cold start
        import urllib3

        self._unavailable = urllib3.exceptions.HTTPError  # refused, reset, DNS, connect or read timeout
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            retries=False,  # retries are the caller's decision (shared_lib.retry), never hidden here
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        # kept here, not in the PoolManager: urllib3 drops its default headers when a call passes any
        self.headers = {"Accept": "application/json", **(headers or {})}

    def get(
        self,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        return self.request("GET", path, query=query, headers=headers)

    def post(
        self, path: str, *, json_body: Any = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        return self.request("POST", path, json_body=json_body, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """One request; TransientError when the peer cannot be reached or does not answer in time."""
        url = self.base_url + path
        if query:
            url += "?" + urlencode({k: str(v) for k, v in query.items()})
        send_headers = {**self.headers, **(headers or {})}
        body: bytes | None = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            send_headers["Content-Type"] = "application/json"
        status = "error"
        attributes: dict[str, tracing.Attribute] = {}
        if tracing.active():
            attributes = {
                "http.request.method": method,
                "url.full": self.base_url + path,  # without the query: no ids or values in it
                "peer.service": self.target,
            }
        with tracing.span(f"{method} {self.target}", "client", attributes) as span:
            span.inject(send_headers)
            started = time.perf_counter()
            try:
                response = self._pool.request(
                    method, url, body=body, headers=send_headers, redirect=False, preload_content=True
                )
                status = str(response.status)
            except self._unavailable as exc:
                span.fail(type(exc).__name__)
                raise TransientError(f"{self.name} is unavailable") from exc
            finally:
                metrics.CLIENT_DURATION.labels(self.target, status).observe(time.perf_counter() - started)
            span.set("http.response.status_code", response.status)
            if response.status >= 500:
                span.fail(f"HTTP {response.status}")
        return HttpResponse(response.status, response.data, dict(response.headers), self.name)

    def close(self) -> None:
        self._pool.clear()
