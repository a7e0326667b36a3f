"""Ports, data dirs and server.properties of the local broker: pure, no broker, no JVM, no network."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from streamer.kafka import local
from streamer.kafka.local import config


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
    assert config.plaintext_port(props) == 29092


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
    monkeypatch.setattr(config.uuid, "uuid4", lambda: next(draws))
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
    repo = Path(local.__file__).resolve().parents[3]  # streamer/kafka/local/__init__.py
    assert local.default_data_dir() == repo / "var" / "kafka"  # tests run from a checkout
    assert local.kafka_home() == Path.home() / ".cache" / "streamer" / "kafka" / local.kafka_version()
