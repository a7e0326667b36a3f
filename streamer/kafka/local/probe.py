"""Is a broker there? Ports that are free, and a readiness probe that speaks the Kafka protocol.

Stdlib sockets only: ApiVersions v0 and a topic-less Metadata request, enough to tell a broker that has
joined its KRaft quorum from a socket that merely accepts connections.
"""

from __future__ import annotations

import socket
import struct

from streamer.kafka.local._common import LocalKafkaError
from streamer.kafka.local.config import DEFAULT_HOST, default_port

__all__ = ["free_cluster_ports", "free_port_pair", "live_brokers", "port_in_use", "probe"]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _roundtrip(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """Send one request (header v1: non-flexible) and return the response body after the correlation id."""
    client_id = b"streamer-local-probe"
    msg = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", data, 0)
    if got != correlation_id:
        raise ValueError(f"correlation id {got} != {correlation_id}")
    return data[4:]


def _api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    body = _roundtrip(sock, 18, 0, 1, b"")  # ApiVersions v0: every broker version answers it
    error_code, count = struct.unpack_from(">hi", body, 0)
    if error_code != 0:
        raise ValueError(f"ApiVersions error {error_code}")
    versions: dict[int, tuple[int, int]] = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
        versions[key] = (lo, hi)
    return versions


def _metadata_has_broker(sock: socket.socket, version: int) -> bool:
    """Metadata (v1..v8, no topics): true once the broker lists a live broker and a controller id."""
    brokers, controller_id = _metadata_brokers(sock, version)
    return bool(brokers > 0 and controller_id >= 0)


def _metadata_brokers(sock: socket.socket, version: int) -> tuple[int, int]:
    """Metadata (v1..v8, no topics): how many live brokers the answering broker lists, and the controller id."""
    body = struct.pack(">i", 0)  # empty topic list = no topics (v1+)
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations
    data = _roundtrip(sock, 3, version, 2, body)
    off = 4 if version >= 3 else 0  # throttle_time_ms
    (n_brokers,) = struct.unpack_from(">i", data, off)
    off += 4
    for _ in range(n_brokers):
        off += 4  # node_id
        (host_len,) = struct.unpack_from(">h", data, off)
        off += 2 + host_len + 4  # host, port
        (rack_len,) = struct.unpack_from(">h", data, off)
        off += 2 + max(rack_len, 0)
    if version >= 2:
        (cluster_len,) = struct.unpack_from(">h", data, off)
        off += 2 + max(cluster_len, 0)
    (controller_id,) = struct.unpack_from(">i", data, off)
    return n_brokers, controller_id


def probe(host: str = DEFAULT_HOST, port: int | None = None, timeout: float = 2.0) -> bool:
    """True if a Kafka broker answers on host:port and reports a live broker in its metadata.

    A TCP connect is not enough: the socket is bound before the broker has joined the KRaft quorum and
    been unfenced, and clients connecting then get errors. So this speaks the Kafka protocol:
    ApiVersions v0, then a topic-less Metadata request.
    """
    port = default_port() if port is None else port
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            versions = _api_versions(sock)
            if 3 not in versions:
                return False
            lo, hi = versions[3]
            version = max(lo, 1)
            if version > min(hi, 8):  # no non-flexible Metadata version left: ApiVersions has to do
                return True
            return _metadata_has_broker(sock, version)
    except (OSError, ValueError, struct.error):
        return False


def live_brokers(host: str, port: int, timeout: float = 2.0) -> int:
    """How many live brokers the broker on host:port lists in its metadata (0: none, or no answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            versions = _api_versions(sock)
            lo, hi = versions.get(3, (0, -1))
            version = max(lo, 1)
            if version > min(hi, 8):
                return 0
            brokers, controller_id = _metadata_brokers(sock, version)
            return brokers if controller_id >= 0 else 0
    except (OSError, ValueError, struct.error):
        return 0


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the JVM: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port_pair(host: str = DEFAULT_HOST) -> int:
    """A port ``p`` free right now with ``p + 1`` free too (the broker's controller listens on ``p + 1``).

    Why: a broker for tests or a second checkout must not collide with a Kafka that already holds 9092.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port < 65534 and not port_in_use(host, port + 1):
            return port
    raise LocalKafkaError(f"no free pair of ports on {host}")


def free_cluster_ports(brokers: int, host: str = DEFAULT_HOST) -> list[int]:
    """Client ports for ``brokers`` nodes, each free with its controller port (+ 1), all distinct."""
    ports: list[int] = []
    for _ in range(100 * brokers):
        port = free_port_pair(host)
        if not {port, port + 1} & ({p for p in ports} | {p + 1 for p in ports}):
            ports.append(port)
        if len(ports) == brokers:
            return ports
    raise LocalKafkaError(f"no {brokers} free pairs of ports on {host}")
