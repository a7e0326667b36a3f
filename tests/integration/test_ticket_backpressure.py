"""Adaptive batching on the real broker: a backlog far above the buffer bound pauses fetching, the paused
partitions resume, and every ticket comes out once, in order per key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.settings import Settings
from streamer.topics import load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
BUDGET = 64  # tokens: the marks grow to 1.5 s of model work, a few hundred tickets, so the waves are larger
KEYS = 12
PER_KEY = 30


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, want: int, timeout: float) -> list[tuple[int, int, dict[str, object]]]:
    """(partition, offset, value) of ``topic`` from the beginning, until ``want`` records or the timeout."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, int, dict[str, object]]] = []
    try:
        parts = await topic_partitions(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < want and loop.time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((m.partition, m.offset, orjson.loads(m.value)) for m in messages)
    finally:
        await consumer.stop()
    return out


def ticket(key: int, seq: int) -> tuple[bytes, bytes]:
    body = f"Where is my refund for order ORD-{key}{seq:03d}? It has been two weeks. " * (1 + seq % 3)
    value = {
        "id": f"K{key}-{seq:03d}",
        "created_at": "2026-11-28T09:00:00Z",
        "body": body,
        "customer": {"id": f"C-{key}", "tier": "pro"},
    }
    return f"K{key}".encode(), orjson.dumps(value)


def log_events(path: Path, name: str) -> list[dict[str, object]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in (orjson.loads(line) for line in lines if line.startswith("{")) if e.get("event") == name]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


PAUSED, RESUMED = "fetching paused: inference behind", "fetching resumed"


def test_paused_partitions_resume_and_nothing_is_lost_or_reordered_per_key(
    kafka_bootstrap: str, test_bundle: Path, tmp_path: Path
) -> None:
    prefix = f"t.bp.{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topics_dir=REPO / "topics")
    asyncio.run(apply_topics(settings, load_catalog(settings.topics_file).topics.values()))
    source = settings.topic("support.tickets.v1")
    enriched = settings.topic("support.tickets.enriched.v1")

    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMER_TOPIC_PREFIX": prefix,
        "STREAMER_GROUP_ID": f"test-bp-{uuid.uuid4().hex[:8]}",
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_BATCHING": "adaptive",
        "STREAMER_BATCH_MAX_TOKENS": str(BUDGET),
        "STREAMER_LOG_FORMAT": "json",
        "STREAMER_LOG_LEVEL": "INFO",
        "STREAMER_METRICS_PORT": "0",
    }
    # Two waves above the buffer's bound: the first pauses fetching, and the partitions must resume, or the
    # second (produced only after that) would never be fetched.
    waves = [[ticket(k, seq) for seq in range(w * PER_KEY, (w + 1) * PER_KEY) for k in range(KEYS)] for w in (0, 1)]
    records = [r for wave in waves for r in wave]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker", "--only", "tickets"], env=env, stdout=log, stderr=log
        )
        try:
            warm = [ticket(99, 0)]
            asyncio.run(produce(kafka_bootstrap, source, warm))
            assert len(asyncio.run(read_all(kafka_bootstrap, enriched, 1, 120))) == 1, "worker never answered"
            asyncio.run(produce(kafka_bootstrap, source, waves[0]))
            wait_for(lambda: bool(log_events(log_path, RESUMED)), 180, "fetching to resume")
            assert proc.poll() is None, "worker died"
            asyncio.run(produce(kafka_bootstrap, source, waves[1]))
            out = asyncio.run(read_all(kafka_bootstrap, enriched, len(records) + 1, 180))
            assert proc.poll() is None, "worker died"
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    paused, resumed = log_events(log_path, PAUSED), log_events(log_path, RESUMED)
    assert paused and resumed
    # Fetching pauses once the buffer is above its high mark, not long after (the mark follows the model's
    # measured speed, so it can also drop below a buffer that is filling).
    for e in paused:
        assert isinstance(e["buffered_tokens"], int) and isinstance(e["pause_above"], int)
        assert e["pause_above"] < e["buffered_tokens"] <= 2 * e["pause_above"]

    # Nothing lost, nothing twice, and each key's tickets came out in the order they went in.
    ids = [value["id"] for _, _, value in out if value["id"] != "K99-000"]
    assert sorted(ids) == sorted(orjson.loads(v)["id"] for _, v in records)
    by_key: dict[str, list[str]] = defaultdict(list)
    for _, _, value in sorted(out, key=lambda r: (r[0], r[1])):
        assert isinstance(value["id"], str)
        by_key[value["id"].split("-")[0]].append(value["id"])
    assert len(by_key) == KEYS + 1
    for key, seen in by_key.items():
        assert seen == sorted(seen), key
