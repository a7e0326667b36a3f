"""Run a real Apache Kafka 4.x broker (one node, KRaft) or a three-node cluster on this machine, without Docker.

Why: the pipeline's integration tests and local runs need a real broker (consumer groups, transactions,
10 MB records), and Docker is not always available. Kafka is plain Java, so its jars are fetched once from
Maven Central (``deploy/kafka/pom.xml``) into a cache outside git and the broker is launched with
``java -cp 'libs/*' kafka.Kafka server.properties``.

The module is stdlib-only on purpose: it must work before (and without) the project's heavy deps.

    python -m streamer.kafka.local start          # kafka ready on 127.0.0.1:9092 (started in 7.4 s)
    python -m streamer.kafka.local status
    python -m streamer.kafka.local stop
    python -m streamer.kafka.local console-consumer --topic t --from-beginning
    python -m streamer.kafka.local start --brokers 3   # nodes on 9092, 9094, 9096 (var/kafka-cluster)

Environment overrides: STREAMER_LOCAL_KAFKA_PORT, STREAMER_LOCAL_KAFKA_DIR (data dir),
STREAMER_KAFKA_HOME (jar cache holding ``libs/``), STREAMER_KAFKA_VERSION.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamer.paths import cache_root

__all__ = [
    "CONSOLE_TOOLS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "Broker",
    "LocalCluster",
    "LocalKafkaError",
    "SaslSslListener",
    "cluster_status",
    "console_tool_cmd",
    "default_data_dir",
    "default_port",
    "ensure_jars",
    "free_cluster_ports",
    "free_port_pair",
    "kafka_home",
    "kafka_version",
    "live_brokers",
    "main",
    "probe",
    "server_properties",
    "start",
    "start_cluster",
    "start_node",
    "status",
    "stop",
    "stop_cluster",
    "stop_node",
]

KAFKA_VERSION = "4.1.1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
# Room for 10 MB test values plus record/batch overhead.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_JVM_OPTS: tuple[str, ...] = ("-Xmx512m", "-Xms256m")
# Short-lived tool JVMs (StorageTool, console clients): small heap, fast start-up beats peak throughput.
TOOL_JVM_OPTS: tuple[str, ...] = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
# Kafka's own kafka-server-start.sh GC settings.
_BROKER_JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Short names accepted by console_tool_cmd() and the CLI; a fully qualified class name works too.
CONSOLE_TOOLS: dict[str, str] = {
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "storage": "kafka.tools.StorageTool",
}

PID_FILE = "broker.pid"
PROPS_FILE = "server.properties"
LOG_FILE = "broker.log"  # written by log4j2 (deploy/kafka/log4j2.yaml)
OUT_FILE = "broker.out"  # the JVM's own stdout/stderr: crashes before log4j2 is up
LOCK_FILE = ".lock"
LOG_DIRS_SUBDIR = "data"  # Kafka's log.dirs; kept apart so our files never look like partitions

_REPO_ROOT = Path(__file__).resolve().parents[2]
_DEPLOY_DIR = _REPO_ROOT / "deploy" / "kafka"

_log = logging.getLogger(__name__)


class LocalKafkaError(RuntimeError):
    """The local broker could not be set up, started or stopped; the message says why (and what to do)."""


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


@dataclass(frozen=True)
class Broker:
    """A running local broker."""

    host: str
    port: int
    pid: int
    data_dir: Path
    already_running: bool = False
    startup_s: float = 0.0
    ready: bool = True
    sasl_ssl_port: int | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str | None:
        """``host:port`` of the SASL_SSL listener, when the broker was started with one."""
        return f"{self.host}:{self.sasl_ssl_port}" if self.sasl_ssl_port is not None else None

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE


# --------------------------------------------------------------------------------------------- locations


def kafka_version() -> str:
    """Kafka version to fetch and run (env STREAMER_KAFKA_VERSION, else KAFKA_VERSION)."""
    return os.environ.get("STREAMER_KAFKA_VERSION") or KAFKA_VERSION


def kafka_home(version: str | None = None) -> Path:
    """Jar cache for one Kafka version; it lives outside git and is shared by every checkout."""
    env = os.environ.get("STREAMER_KAFKA_HOME")
    if env:
        return Path(env).expanduser()
    return cache_root() / "kafka" / (version or kafka_version())


def _in_checkout() -> bool:
    return (_REPO_ROOT / "pyproject.toml").is_file() and (_DEPLOY_DIR / "pom.xml").is_file()


def default_data_dir() -> Path:
    """``<repo>/var/kafka`` in a checkout (git-ignored), else ``~/.local/state/streamer/kafka``."""
    env = os.environ.get("STREAMER_LOCAL_KAFKA_DIR")
    if env:
        return Path(env).expanduser()
    if _in_checkout():
        return _REPO_ROOT / "var" / "kafka"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "streamer" / "kafka"


def default_port() -> int:
    """Client port: env STREAMER_LOCAL_KAFKA_PORT, else 9092 (the controller takes port + 1)."""
    env = os.environ.get("STREAMER_LOCAL_KAFKA_PORT")
    if not env:
        return DEFAULT_PORT
    try:
        return _check_port(int(env))
    except ValueError:
        raise LocalKafkaError(f"STREAMER_LOCAL_KAFKA_PORT={env!r} is not a port number") from None


def _check_port(port: int) -> int:
    if not 1 <= port <= 65534:  # port + 1 is the controller listener
        raise LocalKafkaError(f"port {port} out of range 1..65534")
    return port


def _resolve_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir().resolve()


# ------------------------------------------------------------------------------------------------- jars


def find_java() -> str:
    """The java executable ($JAVA_HOME/bin/java first, like Kafka's scripts, then PATH)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise LocalKafkaError("java not found on PATH: install a JDK 17+ (Kafka 4.x needs Java 17)")
    return found


def _libs_ready(libs: Path, version: str) -> bool:
    return (libs / f"kafka_2.13-{version}.jar").is_file()


def ensure_jars(version: str | None = None) -> Path:
    """Return the ``libs/`` dir with the broker's jars, running Maven once if the cache is empty.

    The download goes to a temporary dir that is renamed into place, and a lock file serialises
    concurrent callers (parallel test workers), so a half-filled cache is never used.
    """
    version = version or kafka_version()
    home = kafka_home(version)
    libs = home / "libs"
    if _libs_ready(libs, version):
        return libs
    find_java()
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError("mvn not found on PATH: install Maven 3.6+ (it fetches the Kafka jars once)")
    pom = _DEPLOY_DIR / "pom.xml"
    if not pom.is_file():
        raise LocalKafkaError(f"{pom} not found: run from a streamer checkout, or fill {libs} yourself")
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / LOCK_FILE):
        if _libs_ready(libs, version):
            return libs
        tmp = home / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-Dkafka.version={version}", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        _log.info("fetching Kafka %s jars with Maven into %s (first run only)", version, libs)
        t0 = time.monotonic()
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not _libs_ready(tmp, version):
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalKafkaError(
                f"maven could not fetch Kafka {version} (exit {res.returncode}): "
                + _tail_text(res.stdout + res.stderr, 30)
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        _log.info("fetched %d jars in %.1f s", len(list(libs.glob("*.jar"))), time.monotonic() - t0)
    return libs


def _classpath(libs: Path) -> str:
    return f"{libs}{os.sep}*"  # the JVM expands the wildcard itself


def _tools_log4j_opts() -> list[str]:
    cfg = _DEPLOY_DIR / "tools-log4j2.yaml"
    return [f"-Dlog4j2.configurationFile={cfg}"] if cfg.is_file() else ["-Dlog4j2.level=WARN"]


def console_tool_cmd(tool: str, args: Sequence[str], *, jvm_opts: Sequence[str] | None = None) -> list[str]:
    """The java command that runs one of Kafka's own CLI tools from the cached jars.

    ``tool`` is a short name from CONSOLE_TOOLS ("console-producer", "console-consumer", "topics", ...) or
    a fully qualified class name. Tests use these as clients independent of the Python Kafka libraries.
    Downloads the jars if needed. Logging goes to stderr at WARN, so stdout carries only the data.
    """
    main_class = CONSOLE_TOOLS.get(tool, tool)
    if "." not in main_class:
        raise LocalKafkaError(f"unknown Kafka tool {tool!r}; known: {', '.join(CONSOLE_TOOLS)}")
    java = find_java()
    libs = ensure_jars()
    opts = list(TOOL_JVM_OPTS if jvm_opts is None else jvm_opts)
    return [java, *opts, *_tools_log4j_opts(), "-cp", _classpath(libs), main_class, *args]


# ------------------------------------------------------------------------------------------- properties


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
    _check_port(port)
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
    sasl_port = _check_port(listener.port)
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


def _plaintext_port(props: Mapping[str, str]) -> int | None:
    for listener in props.get("advertised.listeners", props.get("listeners", "")).split(","):
        name, _, address = listener.strip().partition("://")
        if name == "PLAINTEXT" and ":" in address:
            with contextlib.suppress(ValueError):
                return int(address.rsplit(":", 1)[1])
    return None


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


def _format_storage(
    java: str,
    libs: Path,
    props_path: Path,
    extra_args: Sequence[str] = (),
    *,
    cluster_id: str | None = None,
    quorum_args: Sequence[str] = ("--standalone",),
) -> None:
    cmd = [
        java, *TOOL_JVM_OPTS, *_tools_log4j_opts(), "-cp", _classpath(libs), CONSOLE_TOOLS["storage"],
        "format", *quorum_args, "-t", cluster_id or new_cluster_id(), "-c", str(props_path), *extra_args,
    ]  # fmt: skip
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        output = res.stdout + res.stderr
        for arg in extra_args:  # SCRAM passwords are arguments: never echo them back
            output = output.replace(arg, "--add-scram ***")
        raise LocalKafkaError(f"kafka storage format failed (exit {res.returncode}): " + _tail_text(output, 30))


# ---------------------------------------------------------------------------------------------- probing


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


def _port_in_use(host: str, port: int) -> bool:
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
        if port < 65534 and not _port_in_use(host, port + 1):
            return port
    raise LocalKafkaError(f"no free pair of ports on {host}")


# -------------------------------------------------------------------------------------------- processes


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent start()/stop()/ensure_jars() calls take turns."""
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        # A zombie still "exists" for kill(0); it is dead for our purposes.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """Guard against PID reuse: the process must be kafka.Kafka run on this data dir's properties."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _pid_alive(pid)  # no procfs (macOS): trust the PID
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and str(data_dir / PROPS_FILE).encode() in cmdline


def _running_pid(data_dir: Path) -> int | None:
    """PID of this data dir's broker, or None; a stale or garbled PID file is removed."""
    pid_file = data_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        pid = -1
    if pid > 0 and _pid_alive(pid) and _is_our_broker(pid, data_dir):
        return pid
    _log.info("removing stale pid file %s", pid_file)
    pid_file.unlink(missing_ok=True)
    return None


def _configured_port(data_dir: Path) -> int | None:
    props = data_dir / PROPS_FILE
    return _plaintext_port(read_properties(props)) if props.is_file() else None


def _tail_text(text: str, n: int) -> str:
    lines = text.rstrip().splitlines()[-n:]
    return "\n".join(lines) if lines else "(no output)"


def _tail_file(path: Path, n: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return _tail_text(fh.read().decode("utf-8", "replace"), n)
    except OSError:
        return "(missing)"


def _logs_for_error(data_dir: Path) -> str:
    parts = [f"--- last 30 lines of {data_dir / LOG_FILE} ---", _tail_file(data_dir / LOG_FILE, 30)]
    out = data_dir / OUT_FILE
    if out.is_file() and out.stat().st_size > 0:
        parts += [f"--- last 30 lines of {out} ---", _tail_file(out, 30)]
    return "\n".join(parts)


def _kill(pid: int, timeout: float) -> None:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            _log.warning("kafka pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, timeout)
    raise LocalKafkaError(f"kafka pid {pid} survived SIGKILL")


def _launch(cmd: Sequence[str], out_path: Path) -> int:
    """Start ``cmd`` detached (own session, stdin closed, output appended to ``out_path``); return its PID.

    It goes through ``sh -c '... &'`` so the JVM is not our child: it outlives this process (a test
    session, a CLI call) without becoming a zombie of it or tripping Popen's "still running" warning.
    """
    script = '"$@" </dev/null >>"$STREAMER_KAFKA_OUT" 2>&1 & echo $!'
    env = {**os.environ, "STREAMER_KAFKA_OUT": str(out_path)}
    res = subprocess.run(
        ["/bin/sh", "-c", script, "sh", *cmd],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        start_new_session=True,
    )  # fmt: skip
    try:
        return int(res.stdout.strip())
    except ValueError:
        raise LocalKafkaError(f"could not launch kafka: {res.stderr.strip() or res.stdout.strip()}") from None


def _wait_ready(host: str, port: int, pid: int, timeout: float, data_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _pid_alive(pid):
            raise LocalKafkaError(f"kafka (pid {pid}) exited during start-up\n{_logs_for_error(data_dir)}")
        if probe(host, port, timeout=2.0):
            return
        if time.monotonic() >= deadline:
            raise LocalKafkaError(
                f"kafka (pid {pid}) not ready on {host}:{port} after {timeout:.0f} s\n{_logs_for_error(data_dir)}"
            )
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------- API


def start(
    port: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    jvm_opts: Sequence[str] | None = None,
    auto_create_topics: bool = False,
    extra_properties: Mapping[str, str] | None = None,
    sasl_ssl: SaslSslListener | None = None,
) -> Broker:
    """Start the local broker (or find the one already running from ``data_dir``) and wait until ready.

    Idempotent: a live broker recorded in the PID file that answers on ``port`` is returned at once
    (``already_running=True``). Storage is formatted only on the first start, so topics and offsets
    survive restarts; delete ``data_dir`` for a clean slate. On failure the error carries the log tail.
    ``sasl_ssl`` adds a SCRAM-SHA-512-over-TLS listener; its users are created when storage is formatted.
    """
    port = _check_port(default_port() if port is None else port)
    root = _resolve_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    host = DEFAULT_HOST
    with _locked(root / LOCK_FILE):
        pid = _running_pid(root)
        if pid is not None:
            running_port = _configured_port(root)
            if running_port != port:
                raise LocalKafkaError(
                    f"kafka from {root} already runs on port {running_port} (pid {pid}); "
                    f"stop it first to use port {port}"
                )
            _wait_ready(host, port, pid, timeout, root)
            sasl_port = sasl_ssl.port if sasl_ssl is not None else None
            return Broker(host, port, pid, root, already_running=True, sasl_ssl_port=sasl_port)

        java = find_java()
        libs = ensure_jars()
        log4j_cfg = _DEPLOY_DIR / "log4j2.yaml"
        if not log4j_cfg.is_file():
            raise LocalKafkaError(f"{log4j_cfg} not found: run from a streamer checkout")
        for p in (port, port + 1, *([sasl_ssl.port] if sasl_ssl is not None else [])):
            if _port_in_use(host, p):
                raise LocalKafkaError(
                    f"port {host}:{p} is already in use (another Kafka?); pick another port "
                    "with STREAMER_LOCAL_KAFKA_PORT or stop that process"
                )
        t0 = time.monotonic()
        props_path = root / PROPS_FILE
        props = server_properties(
            port,
            root,
            host=host,
            auto_create_topics=auto_create_topics,
            extra_properties=extra_properties,
            sasl_ssl=sasl_ssl,
        )
        write_properties(props_path, props)
        if not is_formatted(root):
            _format_storage(java, libs, props_path, sasl_ssl.scram_arguments() if sasl_ssl is not None else ())
        cmd = [
            java, *(DEFAULT_JVM_OPTS if jvm_opts is None else jvm_opts), *_BROKER_JVM_FLAGS,
            f"-Dkafka.logs.dir={root}", f"-Dlog4j2.configurationFile={log4j_cfg}",
            "-cp", _classpath(libs), "kafka.Kafka", str(props_path),
        ]  # fmt: skip
        pid = _launch(cmd, root / OUT_FILE)
        (root / PID_FILE).write_text(f"{pid}\n")
        try:
            _wait_ready(host, port, pid, timeout, root)
        except BaseException:
            with contextlib.suppress(LocalKafkaError):
                _kill(pid, 5.0)
            (root / PID_FILE).unlink(missing_ok=True)
            raise
        sasl_port = sasl_ssl.port if sasl_ssl is not None else None
        return Broker(host, port, pid, root, startup_s=time.monotonic() - t0, sasl_ssl_port=sasl_port)


def stop(data_dir: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop the broker of ``data_dir``: SIGTERM, SIGKILL after ``timeout`` s. False if none was running."""
    root = _resolve_dir(data_dir)
    if not root.is_dir():
        return False
    with _locked(root / LOCK_FILE):
        pid = _running_pid(root)
        if pid is None:
            return False
        _kill(pid, timeout)
        (root / PID_FILE).unlink(missing_ok=True)
        return True


def status(data_dir: str | os.PathLike[str] | None = None) -> Broker | None:
    """The broker running from ``data_dir`` (``ready`` says whether it answers), or None."""
    root = _resolve_dir(data_dir)
    if not (root / PID_FILE).is_file():
        return None
    pid = _running_pid(root)
    if pid is None:
        return None
    port = _configured_port(root) or default_port()
    return Broker(DEFAULT_HOST, port, pid, root, already_running=True, ready=probe(DEFAULT_HOST, port))


# ---------------------------------------------------------------------------------------------- cluster

#: Heap of each node of a local cluster: three JVMs share the machine.
CLUSTER_JVM_OPTS: tuple[str, ...] = ("-Xmx384m", "-Xms128m")
CLUSTER_SUFFIX = "-cluster"


@dataclass(frozen=True)
class LocalCluster:
    """A local KRaft cluster: ``nodes[i]`` is node ``i + 1``, a combined broker and controller in
    ``data_dir/node-<i + 1>``; the nodes are the controller quorum's voters."""

    nodes: tuple[Broker, ...]
    data_dir: Path
    startup_s: float = 0.0
    already_running: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]


def node_dir(data_dir: str | os.PathLike[str], node_id: int) -> Path:
    return Path(data_dir) / f"node-{node_id}"


def is_cluster_dir(data_dir: str | os.PathLike[str]) -> bool:
    return node_dir(data_dir, 1).is_dir()


def cluster_size(data_dir: str | os.PathLike[str]) -> int:
    count = 0
    while node_dir(data_dir, count + 1).is_dir():
        count += 1
    return count


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


def cluster_ports(base: int, brokers: int) -> list[int]:
    """Client ports of ``brokers`` nodes from ``base``: ``base``, ``base + 2``, ... (controllers on each + 1)."""
    return [_check_port(base + 2 * i) for i in range(brokers)]


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


def _cluster_id_of(data_dir: Path, brokers: int) -> str | None:
    """The cluster id a formatted node of the cluster already has (all nodes must share it)."""
    for node_id in range(1, brokers + 1):
        meta = node_dir(data_dir, node_id) / LOG_DIRS_SUBDIR / "meta.properties"
        if meta.is_file():
            cluster_id = read_properties(meta).get("cluster.id")
            if cluster_id:
                return cluster_id
    return None


def _node_broker(root: Path, node_id: int, pid: int, **fields: object) -> Broker:
    where = node_dir(root, node_id)
    port = _configured_port(where)
    assert port is not None, f"{where} has no server.properties"
    return Broker(DEFAULT_HOST, port, pid, where, **fields)  # type: ignore[arg-type]


def _wait_cluster(root: Path, nodes: Sequence[Broker], brokers: int, timeout: float) -> None:
    """Until every node answers and lists ``brokers`` live brokers (the quorum formed, all registered)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        _wait_ready(node.host, node.port, node.pid, max(deadline - time.monotonic(), 1.0), node.data_dir)
    while not all(live_brokers(n.host, n.port) >= brokers for n in nodes):
        if time.monotonic() >= deadline:
            seen = {n.port: live_brokers(n.host, n.port) for n in nodes}
            raise LocalKafkaError(f"cluster in {root} not formed after {timeout:.0f} s (live brokers per port: {seen})")
        time.sleep(0.2)


def start_cluster(
    ports: Sequence[int] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    brokers: int = 3,
    timeout: float = 2 * DEFAULT_START_TIMEOUT_S,
    jvm_opts: Sequence[str] | None = None,
    extra_properties: Mapping[str, str] | None = None,
) -> LocalCluster:
    """Start a local KRaft cluster of ``brokers`` nodes (or the part of it that is down) and wait until
    every node lists all of them.

    ``ports`` are the nodes' client ports (each controller takes port + 1; default: from
    ``STREAMER_LOCAL_KAFKA_PORT``/9092 in steps of 2). Storage is formatted once with one cluster id;
    topics and offsets survive restarts. Nodes already running are kept (``already_running`` when all are).
    """
    if brokers < 2:
        raise LocalKafkaError("a cluster has at least 2 brokers (use start() for one)")
    ports = list(ports) if ports is not None else cluster_ports(default_port(), brokers)
    if len(ports) != brokers or len(set(ports) | {p + 1 for p in ports}) != 2 * brokers:
        raise LocalKafkaError(f"need {brokers} client ports p with p and p + 1 all distinct; got {ports}")
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else _default_cluster_dir()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK_FILE):
        existing = cluster_size(root)
        if existing and existing != brokers:
            raise LocalKafkaError(f"{root} holds a cluster of {existing} nodes, not {brokers}")
        java = find_java()
        libs = ensure_jars()
        log4j_cfg = _DEPLOY_DIR / "log4j2.yaml"
        if not log4j_cfg.is_file():
            raise LocalKafkaError(f"{log4j_cfg} not found: run from a streamer checkout")
        t0 = time.monotonic()
        cluster_id = _cluster_id_of(root, brokers)
        if cluster_id is None:
            cluster_id = new_cluster_id()
        else:  # a formed cluster keeps its ports: they are its controller quorum's addresses
            ports = [_configured_port(node_dir(root, i)) or port for i, port in enumerate(ports, 1)]
        nodes: list[Broker] = []
        launched = 0
        for node_id in range(1, brokers + 1):
            where = node_dir(root, node_id)
            where.mkdir(parents=True, exist_ok=True)
            pid = _running_pid(where)
            if pid is not None:
                nodes.append(_node_broker(root, node_id, pid, already_running=True))
                continue
            node = _launch_node(java, libs, log4j_cfg, root, node_id, ports, cluster_id, jvm_opts, extra_properties)
            nodes.append(node)
            launched += 1
        try:
            _wait_cluster(root, nodes, brokers, timeout)
        except BaseException:
            if launched:
                stop_cluster(root, timeout=10.0)
            raise
        return LocalCluster(tuple(nodes), root, startup_s=time.monotonic() - t0, already_running=not launched)


def _launch_node(
    java: str,
    libs: Path,
    log4j_cfg: Path,
    root: Path,
    node_id: int,
    ports: Sequence[int],
    cluster_id: str,
    jvm_opts: Sequence[str] | None,
    extra_properties: Mapping[str, str] | None,
) -> Broker:
    where = node_dir(root, node_id)
    port = ports[node_id - 1]
    for p in (port, port + 1):
        if _port_in_use(DEFAULT_HOST, p):
            raise LocalKafkaError(f"port {DEFAULT_HOST}:{p} of node {node_id} is already in use (another Kafka?)")
    props_path = where / PROPS_FILE
    write_properties(props_path, cluster_properties(node_id, ports, root, extra_properties=extra_properties))
    if not is_formatted(where):
        _format_storage(java, libs, props_path, cluster_id=cluster_id, quorum_args=())
    cmd = [
        java, *(CLUSTER_JVM_OPTS if jvm_opts is None else jvm_opts), *_BROKER_JVM_FLAGS,
        f"-Dkafka.logs.dir={where}", f"-Dlog4j2.configurationFile={log4j_cfg}",
        "-cp", _classpath(libs), "kafka.Kafka", str(props_path),
    ]  # fmt: skip
    pid = _launch(cmd, where / OUT_FILE)
    (where / PID_FILE).write_text(f"{pid}\n")
    return Broker(DEFAULT_HOST, port, pid, where)


def start_node(
    data_dir: str | os.PathLike[str], node_id: int, *, timeout: float = DEFAULT_START_TIMEOUT_S
) -> Broker:
    """Start one stopped (or killed) node of an existing cluster again and wait until it answers."""
    root = Path(data_dir).expanduser().resolve()
    where = node_dir(root, node_id)
    if not (where / PROPS_FILE).is_file():
        raise LocalKafkaError(f"{where} is not a node of a cluster started before")
    with _locked(root / LOCK_FILE):
        pid = _running_pid(where)
        if pid is not None:
            return _node_broker(root, node_id, pid, already_running=True)
        brokers = cluster_size(root)
        ports = [_configured_port(node_dir(root, i)) or 0 for i in range(1, brokers + 1)]
        log4j_cfg = _DEPLOY_DIR / "log4j2.yaml"
        t0 = time.monotonic()
        cluster_id = _cluster_id_of(root, brokers) or new_cluster_id()
        node = _launch_node(find_java(), ensure_jars(), log4j_cfg, root, node_id, ports, cluster_id, None, None)
        _wait_ready(node.host, node.port, node.pid, timeout, where)
        return replace(node, startup_s=time.monotonic() - t0)


def stop_node(
    data_dir: str | os.PathLike[str], node_id: int, *, kill: bool = False, timeout: float = DEFAULT_STOP_TIMEOUT_S
) -> bool:
    """Stop one node: SIGTERM (a controlled shutdown), or SIGKILL at once with ``kill``. False if not running."""
    root = Path(data_dir).expanduser().resolve()
    where = node_dir(root, node_id)
    with _locked(root / LOCK_FILE):
        pid = _running_pid(where)
        if pid is None:
            return False
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            _kill(pid, timeout)
        (where / PID_FILE).unlink(missing_ok=True)
        return True


def stop_cluster(data_dir: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> int:
    """Stop every node of a cluster (SIGTERM to all at once, SIGKILL past ``timeout``); how many ran."""
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else _default_cluster_dir()
    pids = [pid for i in range(1, cluster_size(root) + 1) if (pid := _running_pid(node_dir(root, i))) is not None]
    for pid in pids:  # all at once: a node waiting for the others' controlled shutdown would wait in vain
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        _kill(pid, max(deadline - time.monotonic(), 0.1))
    for i in range(1, cluster_size(root) + 1):
        (node_dir(root, i) / PID_FILE).unlink(missing_ok=True)
    return len(pids)


def cluster_status(data_dir: str | os.PathLike[str] | None = None) -> list[Broker | None]:
    """Per node of the cluster in ``data_dir``: the running broker (``ready``: it answers), or None."""
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else _default_cluster_dir()
    return [status(node_dir(root, i)) for i in range(1, cluster_size(root) + 1)]


def _default_cluster_dir() -> Path:
    base = default_data_dir().resolve()
    return base.with_name(base.name + CLUSTER_SUFFIX)


# ------------------------------------------------------------------------------------------------- CLI


def _run_tool(tool: str, args: list[str], data_dir: Path | None) -> int:
    has_bootstrap = any(a == "--bootstrap-server" or a.startswith("--bootstrap-server=") for a in args)
    if tool != "storage" and not has_bootstrap:
        running = status(data_dir)
        port = running.port if running else default_port()
        args = ["--bootstrap-server", f"{DEFAULT_HOST}:{port}", *args]
    try:
        return subprocess.call(console_tool_cmd(tool, args))
    except KeyboardInterrupt:
        return 130


def _cluster_command(ns: argparse.Namespace) -> int:
    root = Path(ns.data_dir).expanduser().resolve() if ns.data_dir else _default_cluster_dir()
    try:
        if ns.command == "start":
            base = ns.port if ns.port is not None else default_port()
            cluster = start_cluster(cluster_ports(base, ns.brokers), root, brokers=ns.brokers, timeout=2 * ns.timeout)
            state = "already running" if cluster.already_running else f"ready (started in {cluster.startup_s:.1f} s)"
            print(f"kafka cluster of {len(cluster.nodes)} {state}: {cluster.bootstrap_servers} ({root})")
            return 0
        if ns.command == "stop":
            stopped = stop_cluster(root, timeout=ns.timeout)
            print(f"kafka cluster stopped ({stopped} nodes)" if stopped else f"kafka cluster not running ({root})")
            return 0
        nodes = cluster_status(root)
        if not any(nodes):
            print(f"kafka cluster not running ({root})")
            return 3
        for i, node in enumerate(nodes, 1):
            state = "down" if node is None else ("running" if node.ready else "running but NOT answering")
            where = f" on {node.bootstrap_servers} (pid {node.pid})" if node is not None else ""
            print(f"node {i}: {state}{where}")
        return 0 if all(node is not None and node.ready for node in nodes) else 1
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamer.kafka.local start|stop|status|fetch|<tool> [...]``; returns the exit code."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args_in and args_in[0] in CONSOLE_TOOLS:
        # Everything after the tool name goes to Kafka's tool untouched (--bootstrap-server is added).
        try:
            return _run_tool(args_in[0], args_in[1:], None)
        except LocalKafkaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    parser = argparse.ArgumentParser(
        prog="python -m streamer.kafka.local",
        description="Local single-node Kafka (KRaft) broker. Kafka tools: "
        + ", ".join(CONSOLE_TOOLS)
        + " (arguments are passed through; --bootstrap-server is added).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start the broker (no-op if running) and wait until ready")
    p_start.add_argument("--port", type=int, default=None, help="client port (default 9092 / env)")
    p_start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S)
    p_start.add_argument("--auto-create-topics", action="store_true")
    p_stop = sub.add_parser("stop", help="stop the broker")
    p_stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S)
    p_status = sub.add_parser("status", help="exit 0 if running and ready, 3 if not running")
    sub.add_parser("fetch", help="download the Kafka jars (Maven) if not cached")
    for p in (p_start, p_stop, p_status):
        p.add_argument("--data-dir", default=None, help="broker state dir (default: <repo>/var/kafka / env)")
        p.add_argument(
            "--brokers",
            type=int,
            default=1,
            help="nodes: 1, or a cluster of 3 (replication 3, min.insync.replicas 2) in <data dir>-cluster; "
            "node i listens on port + 2(i - 1)",
        )
    ns = parser.parse_args(args_in)
    if ns.command in ("start", "stop", "status") and (ns.brokers > 1 or (ns.data_dir and is_cluster_dir(ns.data_dir))):
        return _cluster_command(ns)

    try:
        if ns.command == "fetch":
            print(f"kafka {kafka_version()} jars in {ensure_jars()}")
            return 0
        if ns.command == "start":
            broker = start(ns.port, ns.data_dir, timeout=ns.timeout, auto_create_topics=ns.auto_create_topics)
            if broker.already_running:
                print(f"kafka already running on {broker.bootstrap_servers} (pid {broker.pid})")
            else:
                print(f"kafka ready on {broker.bootstrap_servers} (started in {broker.startup_s:.1f} s)")
            return 0
        if ns.command == "stop":
            root = _resolve_dir(ns.data_dir)
            print("kafka stopped" if stop(root, timeout=ns.timeout) else f"kafka not running ({root})")
            return 0
        running = status(ns.data_dir)
        if running is None:
            print(f"kafka not running ({_resolve_dir(ns.data_dir)})")
            return 3
        state = "running" if running.ready else "running but NOT answering"
        print(f"kafka {state} on {running.bootstrap_servers} (pid {running.pid}, data {running.data_dir})")
        return 0 if running.ready else 1
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
