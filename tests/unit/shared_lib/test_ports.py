"""Ports for the servers tests start: free, distinct, and below the range the kernel gives clients."""

from __future__ import annotations

import socket

from shared_lib.devtools import ports


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    chosen = ports.free_ports(20)
    assert len(set(chosen)) == 20
    assert all(ports.LOWEST <= port < ports.ephemeral_start() for port in chosen)
    assert all(ports.bindable(port) for port in chosen)


def test_a_port_a_listener_holds_is_neither_bindable_nor_chosen() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.free_port()))
        held.listen()
        taken = held.getsockname()[1]
        assert not ports.bindable(taken)
        assert taken not in ports.free_ports(50)


def test_the_ephemeral_range_is_read_from_the_kernel() -> None:
    low = int(ports.RANGE_FILE.read_text().split()[0]) if ports.RANGE_FILE.exists() else 32768
    assert ports.ephemeral_start() == low
