"""Unit tests for streamer.kafka.local that need no broker, no JVM and no network."""

from __future__ import annotations

import ast
import base64
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from streamer import paths
from streamer.kafka import local


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = local.server_properties(19092, tmp_path)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:19092")
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["message.max.bytes"]) >= 10 * 1024 * 1024 + 1024
    assert int(props["replica.fetch.max.bytes"]) >= int(props["message.max.bytes"])


def test_cluster_properties_three_voters_replication_3_min_isr_2(tmp_path: Path) -> None:
    ports = [19092, 19094, 19096]
    props = [local.cluster_properties(i, ports, tmp_path) for i in (1, 2, 3)]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert {p["controller.quorum.voters"] for p in props} == {voters}
    assert all("controller.quorum.bootstrap.servers" not in p for p in props)
    assert props[1]["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props[2]["log.dirs"] == str(tmp_path / "node-3" / "data")
    for p in props:
        assert p["default.replication.factor"] == p["offsets.topic.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
        assert p["unclean.leader.election.enable"] == "false"
    two = local.cluster_properties(1, ports[:2], tmp_path)
    assert (two["default.replication.factor"], two["min.insync.replicas"]) == ("2", "1")
    with pytest.raises(local.LocalKafkaError):
        local.cluster_properties(4, ports, tmp_path)
    assert local.cluster_ports(9092, 3) == [9092, 9094, 9096]


def test_free_cluster_ports_are_distinct_pairs() -> None:
    ports = local.free_cluster_ports(3)
    taken = ports + [p + 1 for p in ports]
    assert len(set(taken)) == 6
    for port in taken:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_server_properties_extra_properties_win(tmp_path: Path) -> None:
    props = local.server_properties(
        9092,
        tmp_path,
        auto_create_topics=True,
        extra_properties={"listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093", "x.y": "z"},
    )
    assert props["auto.create.topics.enable"] == "true"
    assert props["x.y"] == "z"
    assert props["listeners"].endswith("9093")


@pytest.mark.parametrize("port", [0, 65535, 70000])
def test_server_properties_rejects_bad_ports(tmp_path: Path, port: int) -> None:
    with pytest.raises(local.LocalKafkaError):
        local.server_properties(port, tmp_path)


def test_properties_roundtrip_and_port(tmp_path: Path) -> None:
    props = local.server_properties(29092, tmp_path / "dir with space")
    path = tmp_path / "server.properties"
    local.write_properties(path, props)
    assert local.read_properties(path) == props
    assert local._plaintext_port(props) == 29092


def test_cluster_id_is_kafka_uuid_format() -> None:
    cid = local.new_cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert cid != local.new_cluster_id()


def test_cluster_id_never_looks_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids starting with a dash made the storage tool fail ('--cluster-id expected one argument')."""
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 of 0b111110... starts with '-'
    ordinary = uuid.UUID(bytes=bytes(16))
    draws = iter([dash_first, ordinary])
    monkeypatch.setattr(local.uuid, "uuid4", lambda: next(draws))
    assert base64.urlsafe_b64encode(dash_first.bytes).startswith(b"-")
    assert local.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMER_LOCAL_KAFKA_PORT", "29092")
    monkeypatch.setenv("STREAMER_LOCAL_KAFKA_DIR", str(tmp_path / "kdata"))
    monkeypatch.setenv("STREAMER_KAFKA_HOME", str(tmp_path / "home"))
    assert local.default_port() == 29092
    assert local.default_data_dir() == tmp_path / "kdata"
    assert local.kafka_home() == tmp_path / "home"
    monkeypatch.setenv("STREAMER_LOCAL_KAFKA_PORT", "nope")
    with pytest.raises(local.LocalKafkaError, match="not a port"):
        local.default_port()


def test_defaults_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("STREAMER_LOCAL_KAFKA_PORT", "STREAMER_LOCAL_KAFKA_DIR", "STREAMER_KAFKA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert local.default_port() == 9092
    repo = Path(local.__file__).resolve().parents[2]
    assert local.default_data_dir() == repo / "var" / "kafka"  # tests run from a checkout
    assert local.kafka_home() == Path.home() / ".cache" / "streamer" / "kafka" / local.kafka_version()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("content", ["dead", "self", "garbage"])
def test_stale_pid_file_is_removed(tmp_path: Path, content: str) -> None:
    pid_text = {"dead": str(_dead_pid()), "self": str(os.getpid()), "garbage": "x1"}[content]
    pid_file = tmp_path / local.PID_FILE
    pid_file.write_text(pid_text + "\n")
    # "self" is alive but is not kafka.Kafka on this data dir: PID reuse must not fool us.
    assert local.status(tmp_path) is None
    assert not pid_file.exists()
    pid_file.write_text(pid_text + "\n")
    assert local.stop(tmp_path) is False
    assert not pid_file.exists()


def test_stop_and_status_without_broker(tmp_path: Path) -> None:
    assert local.stop(tmp_path / "missing") is False
    assert local.status(tmp_path) is None
    assert local.main(["status", "--data-dir", str(tmp_path)]) == 3
    assert local.main(["stop", "--data-dir", str(tmp_path)]) == 0


def test_free_port_pair_gives_two_bindable_ports() -> None:
    port = local.free_port_pair()
    assert 0 < port < 65535
    assert not local._port_in_use("127.0.0.1", port)
    assert not local._port_in_use("127.0.0.1", port + 1)


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


def test_start_refuses_busy_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "find_java", lambda: "java")
    monkeypatch.setattr(local, "ensure_jars", lambda version=None: tmp_path / "libs")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = int(srv.getsockname()[1])
        if port >= 65534:
            pytest.skip("ephemeral port at the top of the range")
        with pytest.raises(local.LocalKafkaError, match="already in use"):
            local.start(port, tmp_path / "k")
    assert not (tmp_path / "k" / local.PID_FILE).exists()


def test_ensure_jars_reports_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    with pytest.raises(local.LocalKafkaError, match=r"^java not found on PATH: install a JDK 17\+"):
        local.ensure_jars()
    monkeypatch.setattr(local.shutil, "which", lambda name: "/usr/bin/java" if name == "java" else None)
    with pytest.raises(local.LocalKafkaError, match=r"^mvn not found on PATH"):
        local.ensure_jars()


def test_ensure_jars_uses_existing_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "home" / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{local.kafka_version()}.jar").write_bytes(b"")
    monkeypatch.setenv("STREAMER_KAFKA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(local.shutil, "which", lambda name: None)  # would fail if maven were needed
    assert local.ensure_jars() == libs


def test_console_tool_cmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "find_java", lambda: "/jdk/bin/java")
    monkeypatch.setattr(local, "ensure_jars", lambda version=None: tmp_path / "libs")
    cmd = local.console_tool_cmd("console-producer", ["--topic", "t"])
    assert cmd[0] == "/jdk/bin/java"
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path / 'libs'}/*"
    assert cmd[-3:] == ["org.apache.kafka.tools.ConsoleProducer", "--topic", "t"]
    consumer = local.console_tool_cmd("console-consumer", [])
    assert consumer[-1] == "org.apache.kafka.tools.consumer.ConsoleConsumer"
    assert local.console_tool_cmd("org.example.Tool", ["-x"])[-2:] == ["org.example.Tool", "-x"]
    with pytest.raises(local.LocalKafkaError, match="unknown Kafka tool"):
        local.console_tool_cmd("nope", [])


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    return imported - {"__future__"}


def test_module_imports_only_stdlib() -> None:
    """local.py must work before the project's dependencies are installed: stdlib, plus stdlib-only
    ``streamer.paths`` (the cache root it shares with the model weights)."""
    imported = _top_level_imports(Path(local.__file__))
    assert {"streamer.paths"} <= imported
    assert {name.split(".")[0] for name in imported - {"streamer.paths"}} <= set(sys.stdlib_module_names), imported
    paths_imports = _top_level_imports(Path(paths.__file__))
    assert {name.split(".")[0] for name in paths_imports} <= set(sys.stdlib_module_names), paths_imports


def test_jars_and_weights_share_one_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamer.models.sources import weights_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("STREAMER_KAFKA_HOME", raising=False)
    assert local.kafka_home("4.1.0") == tmp_path / "streamer" / "kafka" / "4.1.0"
    assert weights_cache() == tmp_path / "streamer" / "weights"
