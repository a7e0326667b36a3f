"""Where a local broker lives and how it is configured: ports, data dirs, ``server.properties`` (KRaft).

Pure file and string work: nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamer.kafka.local._common import DEPLOY_DIR, REPO_ROOT, LocalKafkaError

__all__ = [
    "CLUSTER_SUFFIX",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LOG_DIRS_SUBDIR",
    "LOG_FILE",
    "MAX_MESSAGE_BYTES",
    "OUT_FILE",
    "PID_FILE",
    "PROPS_FILE",
    "SCRAM_MECHANISM",
    "SaslSslListener",
    "check_port",
    "cluster_id_of",
    "cluster_ports",
    "cluster_properties",
    "cluster_size",
    "configured_port",
    "default_cluster_dir",
    "default_data_dir",
    "default_port",
    "is_cluster_dir",
    "is_formatted",
    "new_cluster_id",
    "node_dir",
    "plaintext_port",
    "read_properties",
    "resolve_dir",
    "server_properties",
    "write_properties",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
# Room for 10 MB test values plus record/batch overhead.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

PID_FILE = "broker.pid"
PROPS_FILE = "server.properties"
LOG_FILE = "broker.log"  # written by log4j2 (deploy/kafka/log4j2.yaml)
OUT_FILE = "broker.out"  # the JVM's own stdout/stderr: crashes before log4j2 is up
LOG_DIRS_SUBDIR = "data"  # Kafka's log.dirs; kept apart so our files never look like partitions
#: A cluster's nodes live in ``<default data dir>-cluster/node-<i>``.
CLUSTER_SUFFIX = "-cluster"

#: The one SASL mechanism the optional secured listener offers.
SCRAM_MECHANISM = "SCRAM-SHA-512"
_SCRAM_FORBIDDEN = frozenset(",[]=\"'\n\r")


@dataclass(frozen=True)
class SaslSslListener:
    """An extra ``SASL_SSL`` listener: SCRAM-SHA-512 over TLS, beside the PLAINTEXT one.

    Args:
        port: its port on 127.0.0.1 (the PLAINTEXT listener keeps ``port`` and the controller ``port + 1``).
        certificate_chain: PEM file with the broker's certificate (first) and any intermediates; its
            subject alternative names must cover 127.0.0.1 for clients that check the host name.
        private_key: PEM file with the broker's private key, unencrypted PKCS#8 (``BEGIN PRIVATE KEY``).
        users: SCRAM-SHA-512 user names and passwords. They are created when the data dir is formatted
            (``StorageTool format --add-scram``), that is on the first start of a fresh data dir only.

    Both PEM files are copied into ``server.properties`` (``ssl.keystore.type=PEM``, which Kafka reads
    unencrypted only inline); that file is then written readable by its owner only.
    """

    port: int
    certificate_chain: Path
    private_key: Path
    users: Mapping[str, str] = field(default_factory=dict)

    def scram_arguments(self) -> list[str]:
        """``--add-scram`` arguments for ``StorageTool format`` (one per user)."""
        args: list[str] = []
        for name, password in self.users.items():
            if not name or not password or _SCRAM_FORBIDDEN & set(name + password):
                raise LocalKafkaError(
                    f"SCRAM user {name!r}: name and password must be non-empty, without , [ ] = quotes or newlines"
                )
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return args


def _in_checkout() -> bool:
    return (REPO_ROOT / "pyproject.toml").is_file() and (DEPLOY_DIR / "pom.xml").is_file()


def default_data_dir() -> Path:
    """``<repo>/var/kafka`` in a checkout (git-ignored), else ``~/.local/state/streamer/kafka``."""
    env = os.environ.get("STREAMER_LOCAL_KAFKA_DIR")
    if env:
        return Path(env).expanduser()
    if _in_checkout():
        return REPO_ROOT / "var" / "kafka"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "streamer" / "kafka"


def default_port() -> int:
    """Client port: env STREAMER_LOCAL_KAFKA_PORT, else 9092 (the controller takes port + 1)."""
    env = os.environ.get("STREAMER_LOCAL_KAFKA_PORT")
    if not env:
        return DEFAULT_PORT
    try:
        return check_port(int(env))
    except ValueError:
        raise LocalKafkaError(f"STREAMER_LOCAL_KAFKA_PORT={env!r} is not a port number") from None


def check_port(port: int) -> int:
    if not 1 <= port <= 65534:  # port + 1 is the controller listener
        raise LocalKafkaError(f"port {port} out of range 1..65534")
    return port


def resolve_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir().resolve()


def server_properties(
    port: int,
    data_dir: str | os.PathLike[str],
    *,
    host: str = DEFAULT_HOST,
    auto_create_topics: bool = False,
    extra_properties: Mapping[str, str] | None = None,
    sasl_ssl: SaslSslListener | None = None,
) -> dict[str, str]:
    """server.properties for a combined broker+controller node; ``extra_properties`` wins over defaults.

    ``sasl_ssl`` adds a SASL_SSL listener (SCRAM-SHA-512 over TLS, see ``SaslSslListener``); the
    brokers and the controller keep talking PLAINTEXT among themselves. Other listeners can be added by
    overriding ``listeners``, ``advertised.listeners`` and ``listener.security.protocol.map``.
    Auto topic creation is off by default: topics are applied explicitly (topics/), and a typo
    should fail instead of silently creating a 1-partition topic.
    """
    check_port(port)
    controller_port = port + 1
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Dynamic KRaft quorum (KIP-853), formatted with `StorageTool format --standalone`.
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(Path(data_dir) / LOG_DIRS_SUBDIR),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true" if auto_create_topics else "false",
        # Internal topics: one replica on one node; few partitions so the first group join /
        # transactional producer does not wait for 50 partitions to be created.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests should not wait 3 s for more members before the first rebalance.
        "group.initial.rebalance.delay.ms": "0",
        # After a crash (kill -9) the restarted broker cannot register until the controller expires the
        # old incarnation's session: 9 s by default, half that here (same ratio to the heartbeat).
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "4500",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    if sasl_ssl is not None:
        props.update(_sasl_ssl_properties(sasl_ssl, host, port))
    if extra_properties:
        props.update(extra_properties)
    return props


def _sasl_ssl_properties(listener: SaslSslListener, host: str, port: int) -> dict[str, str]:
    sasl_port = check_port(listener.port)
    if sasl_port in (port, port + 1):
        raise LocalKafkaError(f"SASL_SSL port {sasl_port} collides with the PLAINTEXT or controller port")
    try:
        chain = Path(listener.certificate_chain).read_text(encoding="ascii").strip()
        key = Path(listener.private_key).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalKafkaError(f"cannot read the SASL_SSL listener's PEM files: {exc}") from None
    if "BEGIN CERTIFICATE" not in chain:
        raise LocalKafkaError(f"{listener.certificate_chain} holds no PEM certificate")
    if "BEGIN PRIVATE KEY" not in key:
        raise LocalKafkaError(f"{listener.private_key} must be an unencrypted PKCS#8 PEM key (BEGIN PRIVATE KEY)")
    prefix = "listener.name.sasl_ssl."
    controller = f"CONTROLLER://{host}:{port + 1}"
    return {
        "listeners": f"PLAINTEXT://{host}:{port},{controller},SASL_SSL://{host}:{sasl_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port},{controller},SASL_SSL://{host}:{sasl_port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        prefix + "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        prefix + SCRAM_MECHANISM.lower() + ".sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        prefix + "ssl.keystore.type": "PEM",
        prefix + "ssl.keystore.certificate.chain": chain,
        prefix + "ssl.keystore.key": key,
        prefix + "ssl.client.auth": "none",
    }


def _escape_prop(text: str) -> str:
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\" + out if out[:1] in (" ", "\t") else out


def write_properties(path: Path, props: Mapping[str, str]) -> None:
    """Write a Java .properties file (keys are escaped too: they are ours, but be safe)."""
    lines = ["# generated by streamer.kafka.local: edits are overwritten on every start"]
    for key, value in props.items():
        safe_key = _escape_prop(key).replace("=", "\\=").replace(":", "\\:").replace(" ", "\\ ")
        lines.append(f"{safe_key}={_escape_prop(value)}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if any(key.endswith("ssl.keystore.key") for key in props):
        tmp.chmod(0o600)  # it holds a private key
    tmp.replace(path)


def read_properties(path: Path) -> dict[str, str]:
    """Read back a .properties file written by write_properties (no line continuations)."""
    props: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, _, value = line.partition("=")
        props[key.strip().replace("\\", "")] = value.strip().replace("\\\\", "\\")
    return props


def plaintext_port(props: Mapping[str, str]) -> int | None:
    for listener in props.get("advertised.listeners", props.get("listeners", "")).split(","):
        name, _, address = listener.strip().partition("://")
        if name == "PLAINTEXT" and ":" in address:
            with contextlib.suppress(ValueError):
                return int(address.rsplit(":", 1)[1])
    return None


def configured_port(data_dir: Path) -> int | None:
    props = data_dir / PROPS_FILE
    return plaintext_port(read_properties(props)) if props.is_file() else None


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what random-uuid prints).

    Generated here to save a JVM start (~1 s) per fresh data dir. Like Kafka's own ``Uuid.randomUuid``, it
    never starts with ``-``: the storage tool would read such an id as an option (1 format in 64 failed).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def is_formatted(data_dir: Path) -> bool:
    return (data_dir / LOG_DIRS_SUBDIR / "meta.properties").is_file()


def node_dir(data_dir: str | os.PathLike[str], node_id: int) -> Path:
    return Path(data_dir) / f"node-{node_id}"


def is_cluster_dir(data_dir: str | os.PathLike[str]) -> bool:
    return node_dir(data_dir, 1).is_dir()


def cluster_size(data_dir: str | os.PathLike[str]) -> int:
    count = 0
    while node_dir(data_dir, count + 1).is_dir():
        count += 1
    return count


def cluster_ports(base: int, brokers: int) -> list[int]:
    """Client ports of ``brokers`` nodes from ``base``: ``base``, ``base + 2``, ... (controllers on each + 1)."""
    return [check_port(base + 2 * i) for i in range(brokers)]


def cluster_properties(
    node_id: int,
    ports: Sequence[int],
    data_dir: str | os.PathLike[str],
    *,
    host: str = DEFAULT_HOST,
    extra_properties: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """server.properties of node ``node_id`` (1-based) of a cluster whose client ports are ``ports``.

    Every node is broker and controller; the controllers form a static quorum (``controller.quorum.voters``).
    Topics default to ``min(3, nodes)`` replicas and ``min.insync.replicas`` of 2 (1 on two nodes), the
    internal topics too, so an acknowledged record (acks=all) is on two nodes and one node may fail.
    """
    n = len(ports)
    if not 1 <= node_id <= n:
        raise LocalKafkaError(f"node {node_id} is not one of 1..{n}")
    replicas, in_sync = str(min(3, n)), str(min(2, max(1, n - 1)))
    props = server_properties(ports[node_id - 1], node_dir(data_dir, node_id), host=host)
    del props["controller.quorum.bootstrap.servers"]
    props.update(
        {
            "node.id": str(node_id),
            "controller.quorum.voters": ",".join(f"{i}@{host}:{p + 1}" for i, p in enumerate(ports, 1)),
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            "unclean.leader.election.enable": "false",  # a lagging replica never becomes leader: no loss
            "auto.leader.rebalance.enable": "true",  # leadership goes back to a node that returns
            "leader.imbalance.check.interval.seconds": "10",
        }
    )
    if extra_properties:
        props.update(extra_properties)
    return props


def cluster_id_of(data_dir: Path, brokers: int) -> str | None:
    """The cluster id a formatted node of the cluster already has (all nodes must share it)."""
    for node_id in range(1, brokers + 1):
        meta = node_dir(data_dir, node_id) / LOG_DIRS_SUBDIR / "meta.properties"
        if meta.is_file():
            cluster_id = read_properties(meta).get("cluster.id")
            if cluster_id:
                return cluster_id
    return None


def default_cluster_dir() -> Path:
    base = default_data_dir().resolve()
    return base.with_name(base.name + CLUSTER_SUFFIX)
