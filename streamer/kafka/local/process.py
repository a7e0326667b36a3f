"""Starting and stopping local brokers and clusters: detached JVMs tracked by PID files in their data dirs.

Every start, stop and status goes through an advisory lock on the data dir, so parallel test workers
and a developer's shell take turns; a PID file is trusted only when its process is still ``kafka.Kafka``
on that data dir's properties.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from streamer.kafka.local import jars
from streamer.kafka.local._common import DEPLOY_DIR, LOCK_FILE, LocalKafkaError, locked, tail_text
from streamer.kafka.local.config import (
    DEFAULT_HOST,
    LOG_FILE,
    OUT_FILE,
    PID_FILE,
    PROPS_FILE,
    SaslSslListener,
    check_port,
    cluster_id_of,
    cluster_ports,
    cluster_properties,
    cluster_size,
    configured_port,
    default_cluster_dir,
    default_port,
    is_formatted,
    new_cluster_id,
    node_dir,
    resolve_dir,
    server_properties,
    write_properties,
)
from streamer.kafka.local.probe import free_port_pair, live_brokers, port_in_use, probe

__all__ = [
    "CLUSTER_JVM_OPTS",
    "DEFAULT_JVM_OPTS",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "Broker",
    "LocalCluster",
    "cluster_status",
    "start",
    "start_cluster",
    "start_node",
    "status",
    "stop",
    "stop_cluster",
    "stop_node",
]

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
DEFAULT_JVM_OPTS: tuple[str, ...] = ("-Xmx512m", "-Xms256m")
#: Heap of each node of a local cluster: three JVMs share the machine.
CLUSTER_JVM_OPTS: tuple[str, ...] = ("-Xmx384m", "-Xms128m")
# Kafka's own kafka-server-start.sh GC settings.
_BROKER_JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_log = logging.getLogger(__name__)


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


def _tail_file(path: Path, n: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return tail_text(fh.read().decode("utf-8", "replace"), n)
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
        java, *jars.TOOL_JVM_OPTS, *jars.tools_log4j_opts(), "-cp", jars.classpath(libs), jars.CONSOLE_TOOLS["storage"],
        "format", *quorum_args, "-t", cluster_id or new_cluster_id(), "-c", str(props_path), *extra_args,
    ]  # fmt: skip
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        output = res.stdout + res.stderr
        for arg in extra_args:  # SCRAM passwords are arguments: never echo them back
            output = output.replace(arg, "--add-scram ***")
        raise LocalKafkaError(f"kafka storage format failed (exit {res.returncode}): " + tail_text(output, 30))


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

    Without a port chosen (``port`` or ``STREAMER_LOCAL_KAFKA_PORT``), a 9092 held by another process (a
    Kafka of the machine's own, this project's broker from another checkout) is not an error: the broker
    starts on a free pair of ports, and its ``bootstrap_servers`` (and ``status``) say where.
    """
    chosen = port is not None or bool(os.environ.get("STREAMER_LOCAL_KAFKA_PORT"))
    port = check_port(default_port() if port is None else port)
    root = resolve_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    host = DEFAULT_HOST
    with locked(root / LOCK_FILE):
        pid = _running_pid(root)
        if pid is not None:
            running_port = configured_port(root)
            if running_port is not None and not chosen:
                port = running_port  # it may run on the free port it took when 9092 was held
            if running_port != port:
                raise LocalKafkaError(
                    f"kafka from {root} already runs on port {running_port} (pid {pid}); "
                    f"stop it first to use port {port}"
                )
            _wait_ready(host, port, pid, timeout, root)
            sasl_port = sasl_ssl.port if sasl_ssl is not None else None
            return Broker(host, port, pid, root, already_running=True, sasl_ssl_port=sasl_port)

        java = jars.find_java()
        libs = jars.ensure_jars()
        log4j_cfg = DEPLOY_DIR / "log4j2.yaml"
        if not log4j_cfg.is_file():
            raise LocalKafkaError(f"{log4j_cfg} not found: run from a streamer checkout")
        if not chosen and sasl_ssl is None and (port_in_use(host, port) or port_in_use(host, port + 1)):
            port = free_port_pair(host)
        for p in (port, port + 1, *([sasl_ssl.port] if sasl_ssl is not None else [])):
            if port_in_use(host, p):
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
            "-cp", jars.classpath(libs), "kafka.Kafka", str(props_path),
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
    root = resolve_dir(data_dir)
    if not root.is_dir():
        return False
    with locked(root / LOCK_FILE):
        pid = _running_pid(root)
        if pid is None:
            return False
        _kill(pid, timeout)
        (root / PID_FILE).unlink(missing_ok=True)
        return True


def status(data_dir: str | os.PathLike[str] | None = None) -> Broker | None:
    """The broker running from ``data_dir`` (``ready`` says whether it answers), or None."""
    root = resolve_dir(data_dir)
    if not (root / PID_FILE).is_file():
        return None
    pid = _running_pid(root)
    if pid is None:
        return None
    port = configured_port(root) or default_port()
    return Broker(DEFAULT_HOST, port, pid, root, already_running=True, ready=probe(DEFAULT_HOST, port))


def _node_broker(root: Path, node_id: int, pid: int, **fields: object) -> Broker:
    where = node_dir(root, node_id)
    port = configured_port(where)
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
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else default_cluster_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / LOCK_FILE):
        existing = cluster_size(root)
        if existing and existing != brokers:
            raise LocalKafkaError(f"{root} holds a cluster of {existing} nodes, not {brokers}")
        java = jars.find_java()
        libs = jars.ensure_jars()
        log4j_cfg = DEPLOY_DIR / "log4j2.yaml"
        if not log4j_cfg.is_file():
            raise LocalKafkaError(f"{log4j_cfg} not found: run from a streamer checkout")
        t0 = time.monotonic()
        cluster_id = cluster_id_of(root, brokers)
        if cluster_id is None:
            cluster_id = new_cluster_id()
        else:  # a formed cluster keeps its ports: they are its controller quorum's addresses
            ports = [configured_port(node_dir(root, i)) or port for i, port in enumerate(ports, 1)]
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
        if port_in_use(DEFAULT_HOST, p):
            raise LocalKafkaError(f"port {DEFAULT_HOST}:{p} of node {node_id} is already in use (another Kafka?)")
    props_path = where / PROPS_FILE
    write_properties(props_path, cluster_properties(node_id, ports, root, extra_properties=extra_properties))
    if not is_formatted(where):
        _format_storage(java, libs, props_path, cluster_id=cluster_id, quorum_args=())
    cmd = [
        java, *(CLUSTER_JVM_OPTS if jvm_opts is None else jvm_opts), *_BROKER_JVM_FLAGS,
        f"-Dkafka.logs.dir={where}", f"-Dlog4j2.configurationFile={log4j_cfg}",
        "-cp", jars.classpath(libs), "kafka.Kafka", str(props_path),
    ]  # fmt: skip
    pid = _launch(cmd, where / OUT_FILE)
    (where / PID_FILE).write_text(f"{pid}\n")
    return Broker(DEFAULT_HOST, port, pid, where)


def start_node(data_dir: str | os.PathLike[str], node_id: int, *, timeout: float = DEFAULT_START_TIMEOUT_S) -> Broker:
    """Start one stopped (or killed) node of an existing cluster again and wait until it answers."""
    root = Path(data_dir).expanduser().resolve()
    where = node_dir(root, node_id)
    if not (where / PROPS_FILE).is_file():
        raise LocalKafkaError(f"{where} is not a node of a cluster started before")
    with locked(root / LOCK_FILE):
        pid = _running_pid(where)
        if pid is not None:
            return _node_broker(root, node_id, pid, already_running=True)
        brokers = cluster_size(root)
        ports = [configured_port(node_dir(root, i)) or 0 for i in range(1, brokers + 1)]
        log4j_cfg = DEPLOY_DIR / "log4j2.yaml"
        t0 = time.monotonic()
        cluster_id = cluster_id_of(root, brokers) or new_cluster_id()
        node = _launch_node(
            jars.find_java(), jars.ensure_jars(), log4j_cfg, root, node_id, ports, cluster_id, None, None
        )
        _wait_ready(node.host, node.port, node.pid, timeout, where)
        return replace(node, startup_s=time.monotonic() - t0)


def stop_node(
    data_dir: str | os.PathLike[str], node_id: int, *, kill: bool = False, timeout: float = DEFAULT_STOP_TIMEOUT_S
) -> bool:
    """Stop one node: SIGTERM (a controlled shutdown), or SIGKILL at once with ``kill``. False if not running."""
    root = Path(data_dir).expanduser().resolve()
    where = node_dir(root, node_id)
    with locked(root / LOCK_FILE):
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
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else default_cluster_dir()
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
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else default_cluster_dir()
    return [status(node_dir(root, i)) for i in range(1, cluster_size(root) + 1)]
