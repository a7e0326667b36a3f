"""The self-started local broker (streamer.kafka.local) against real clients.

This module starts its own broker on free ports with a temporary data dir, so it neither needs nor
disturbs the session broker of conftest.py. Clients: aiokafka, and Kafka's own Java console tools from
the same jars as an independent implementation of the protocol.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness.brokers import own_broker

from streamer.kafka import local
from streamer.kafka.local import config as local_config

pytestmark = pytest.mark.kafka

BIG = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.Broker]:
    if shutil.which("java") is None:
        pytest.skip("java not on PATH")
    try:
        local.ensure_jars()
    except local.LocalKafkaError as exc:
        pytest.skip(f"kafka jars unavailable: {exc}")
    with own_broker(tmp_path_factory.mktemp("local-kafka")) as started:
        yield started


def _topic() -> str:
    return f"local-kafka-{uuid.uuid4().hex[:10]}"


async def _create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, expected: int, **kwargs: object) -> list[tuple[bytes, bytes]]:
    """Read ``expected`` records from partition 0 without a consumer group (assign + from start)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", **kwargs)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        out: list[tuple[bytes, bytes]] = []
        for _ in range(60):
            batch = await consumer.getmany(tp, timeout_ms=500)
            out += [(m.key or b"", m.value or b"") for m in batch.get(tp, [])]
            if len(out) >= expected:
                break
        return out
    finally:
        await consumer.stop()


async def test_aiokafka_produce_consume_with_group(broker: local.Broker) -> None:
    topic = _topic()
    await _create_topic(broker.bootstrap_servers, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        async for msg in consumer:
            got.append(msg.value or b"")
            if len(got) == 3:
                break
        await consumer.commit()
    finally:
        await consumer.stop()
    assert got == [b"v0", b"v1", b"v2"]


async def test_ten_megabyte_record(broker: local.Broker) -> None:
    topic = _topic()
    await _create_topic(broker.bootstrap_servers, topic)
    value = bytes(range(256)) * (BIG // 256)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=BIG + 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"big")
    finally:
        await producer.stop()
    got = await _read_all(
        broker.bootstrap_servers, topic, 1, fetch_max_bytes=2 * BIG, max_partition_fetch_bytes=2 * BIG
    )
    assert got == [(b"big", value)]


async def test_java_console_producer_to_aiokafka(broker: local.Broker) -> None:
    topic = _topic()
    await _create_topic(broker.bootstrap_servers, topic)
    cmd = local.console_tool_cmd(
        "console-producer",
        [
            "--bootstrap-server", broker.bootstrap_servers, "--topic", topic,
            "--property", "parse.key=true", "--property", "key.separator=:",
        ],
    )  # fmt: skip
    res = await asyncio.to_thread(
        subprocess.run, cmd, input="k1:hello\nk2:wörld\n", capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    got = await _read_all(broker.bootstrap_servers, topic, 2)
    assert got == [(b"k1", b"hello"), (b"k2", "wörld".encode())]


async def test_aiokafka_to_java_console_consumer(broker: local.Broker) -> None:
    topic = _topic()
    await _create_topic(broker.bootstrap_servers, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"one", key=b"a")
        await producer.send_and_wait(topic, b"two", key=b"b")
    finally:
        await producer.stop()
    cmd = local.console_tool_cmd(
        "console-consumer",
        [
            "--bootstrap-server", broker.bootstrap_servers, "--topic", topic, "--from-beginning",
            "--max-messages", "2", "--timeout-ms", "60000", "--property", "print.key=true",
        ],
    )  # fmt: skip
    res = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["a\tone", "b\ttwo"]


def test_start_is_idempotent(broker: local.Broker) -> None:
    again = local.start(broker.port, broker.data_dir)
    assert again.already_running
    assert again.pid == broker.pid
    assert local.probe(broker.host, broker.port)
    running = local.status(broker.data_dir)
    assert running is not None and running.ready and running.port == broker.port


def test_start_on_another_port_is_refused(broker: local.Broker) -> None:
    with pytest.raises(local.LocalKafkaError, match="already runs on port"):
        local.start(broker.port + 2, broker.data_dir)


async def test_restart_keeps_topics_and_records(broker: local.Broker) -> None:
    topic = _topic()
    await _create_topic(broker.bootstrap_servers, topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"survives", key=b"k", partition=0)
    finally:
        await producer.stop()

    assert local.stop(broker.data_dir)
    assert local.status(broker.data_dir) is None
    assert not local.probe(broker.host, broker.port, timeout=0.5)
    assert local.main(["status", "--data-dir", str(broker.data_dir)]) == 3

    restarted = local.start(broker.port, broker.data_dir, timeout=120)
    assert not restarted.already_running
    assert (Path(broker.data_dir) / "data" / "meta.properties").is_file()
    assert topic in await _list_topics(broker.bootstrap_servers)
    assert await _read_all(broker.bootstrap_servers, topic, 1) == [(b"k", b"survives")]


def test_session_broker_leaves_the_default_port_alone(kafka_bootstrap: str) -> None:
    """The tests' own broker takes free ports, so they pass beside a Kafka that already holds 9092."""
    if os.environ.get("STREAMER_KAFKA_BOOTSTRAP"):
        pytest.skip("the session reuses the broker STREAMER_KAFKA_BOOTSTRAP names")
    host, _, port = kafka_bootstrap.rpartition(":")
    assert (host, int(port)) != (local.DEFAULT_HOST, local.DEFAULT_PORT)
    development = local.status()
    assert development is None or development.port != int(port)  # not the development broker either


def test_a_busy_default_port_moves_the_broker_to_a_free_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another Kafka (or another checkout's broker) on 9092: ``make run`` still gets a broker, and says where."""
    monkeypatch.delenv("STREAMER_LOCAL_KAFKA_PORT", raising=False)
    data_dir = tmp_path / "kafka"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = int(taken.getsockname()[1])
        monkeypatch.setattr(local_config, "DEFAULT_PORT", busy)
        assert local.main(["start", "--data-dir", str(data_dir)]) == 0
        try:
            started = capsys.readouterr().out
            running = local.status(data_dir)
            assert running is not None and running.ready and running.port != busy
            assert f"kafka ready on 127.0.0.1:{running.port}" in started
            assert f"STREAMER_KAFKA_BOOTSTRAP=127.0.0.1:{running.port}" in started
            assert local.main(["status", "--bootstrap", "--data-dir", str(data_dir)]) == 0
            assert capsys.readouterr().out == f"127.0.0.1:{running.port}\n"
            again = local.start(None, data_dir)  # found where it runs, not refused for not being on 9092
            assert again.already_running and again.port == running.port
            with pytest.raises(local.LocalKafkaError, match="already in use"):
                local.start(busy, tmp_path / "other")  # a port asked for is never swapped
        finally:
            local.stop(data_dir)
    assert local.main(["status", "--bootstrap", "--data-dir", str(data_dir)]) == 3
    assert capsys.readouterr().out == ""
