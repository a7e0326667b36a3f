"""Free ports and the readiness probe of the local broker, against plain sockets (no broker)."""

from __future__ import annotations

import socket

from streamer.kafka import local
from streamer.kafka.local.probe import port_in_use


def test_free_cluster_ports_are_distinct_pairs() -> None:
    ports = local.free_cluster_ports(3)
    taken = ports + [p + 1 for p in ports]
    assert len(set(taken)) == 6
    for port in taken:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_port_pair_gives_two_bindable_ports() -> None:
    port = local.free_port_pair()
    assert 0 < port < 65535
    assert not port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port + 1)


def test_free_port_pair_skips_a_held_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = int(held.getsockname()[1])
        assert all(local.free_port_pair() not in (taken, taken - 1) for _ in range(20))


def test_probe_false_when_nothing_listens() -> None:
    assert local.probe("127.0.0.1", local.free_port_pair(), timeout=0.5) is False


def test_probe_false_on_non_kafka_server() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = int(srv.getsockname()[1])
        # The peer accepts (backlog) but never answers: probe must time out, not hang or raise.
        assert local.probe("127.0.0.1", port, timeout=0.3) is False
