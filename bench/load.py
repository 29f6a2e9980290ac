"""The load the CPU benchmarks put on a server: N keep-alive HTTP/1.1 connections, closed loop, for S seconds.

wrk is not installed on the development machine, so the load is Python threads on raw sockets: each sends a
prebuilt request (or one made per request, for POST bodies), reads the answer by its Content-Length and sends
the next. It takes its share of the same 2 cores, which lowers throughput but not the serving processes' CPU
per request, which is what the benchmarks judge; the bare floor and the shop get the same load.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from bench.cpu import Loaded

MakeRequest = Callable[[random.Random], bytes]


def get(path: str, headers: Mapping[str, str] | None = None) -> MakeRequest:
    raw = request_bytes("GET", path, headers or {}, b"")
    return lambda _rng: raw


def post_json(path: str, body_of: Callable[[random.Random], Any]) -> MakeRequest:
    def make(rng: random.Random) -> bytes:
        body = json.dumps(body_of(rng)).encode()
        return request_bytes("POST", path, {"Content-Type": "application/json"}, body)

    return make


def request_bytes(method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Answer:
    """One parsed answer: status and headers (lower-cased names)."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers


def _read_answer(sock: socket.socket, buffer: bytearray) -> Answer:
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ConnectionError(f"an answer without Content-Length: {head}")
    length = int(headers["content-length"])
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        buffer += chunk
    del buffer[:length]
    return Answer(status, headers)


def one(port: int, make: MakeRequest, seed: int = 0) -> Answer:
    """One request on a fresh connection (setup and checks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(make(random.Random(seed)))
        return _read_answer(sock, bytearray())


class Tally:
    """Statuses (and one header's values) seen across a run, for the benchmark's checks."""

    def __init__(self, header: str = "") -> None:
        self.header = header.lower()
        self.statuses: Counter[int] = Counter()
        self.values: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, statuses: Counter[int], values: Counter[str]) -> None:
        with self.lock:
            self.statuses.update(statuses)
            self.values.update(values)


def run(
    port: int,
    make: MakeRequest,
    connections: int,
    seconds: float,
    ok: Callable[[int], bool] = lambda status: 200 <= status < 300,
    tally: Tally | None = None,
) -> Loaded:
    """`connections` closed-loop keep-alive clients for `seconds`: requests answered, those not `ok` (or lost
    to a broken connection, which is opened again), wall seconds."""
    done = [0] * connections
    failed = [0] * connections
    stop = threading.Event()

    def client(index: int) -> None:
        rng = random.Random(index * 7919 + int(time.monotonic() * 1000))
        statuses: Counter[int] = Counter()
        values: Counter[str] = Counter()
        header = tally.header if tally else ""
        sock: socket.socket | None = None
        buffer = bytearray()
        while not stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buffer = bytearray()
                sock.sendall(make(rng))
                answer = _read_answer(sock, buffer)
            except OSError:
                failed[index] += 1
                if sock is not None:
                    sock.close()
                sock = None
                continue
            statuses[answer.status] += 1
            if header:
                values[answer.headers.get(header, "")] += 1
            if ok(answer.status):
                done[index] += 1
            else:
                failed[index] += 1
            if answer.headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
        if sock is not None:
            sock.close()
        if tally is not None:
            tally.add(statuses, values)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    elapsed = time.perf_counter() - started
    return Loaded(requests=sum(done) + sum(failed), errors=sum(failed), seconds=elapsed)
