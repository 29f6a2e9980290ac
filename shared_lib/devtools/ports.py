"""Free loopback ports for servers the dev tools, tests and benchmarks start, chosen below the kernel's
ephemeral range.

A port from `bind(("127.0.0.1", 0))` comes from the ephemeral range (net.ipv4.ip_local_port_range, by
default 32768-60999), the same range the kernel draws clients' source ports from. A server stopped and
started again on such a port (a broker restarted in a fault test) can find it taken by an outgoing
connection meanwhile, or by a client that connected to itself while retrying the dead address (TCP
simultaneous open), and then fails to bind. Below the range only an explicit bind can take a port, and
`free_port` has just checked that none holds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10000
RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 where /proc does not say)."""
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port now (with SO_REUSEADDR, as servers set it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now, between LOWEST and the ephemeral range."""
    highest = ephemeral_start() - 1
    if highest <= LOWEST:
        raise RuntimeError(f"the ephemeral range starts at {highest + 1}: no room below it for servers")
    ports: list[int] = []
    for _ in range(1000):
        port = random.randint(LOWEST, highest)
        if port not in ports and port not in exclude and bindable(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"fewer than {count} free ports between {LOWEST} and {highest} in 1000 tries")


def free_port() -> int:
    """One port free on 127.0.0.1 now, below the ephemeral range (see the module's docstring)."""
    return free_ports(1)[0]
