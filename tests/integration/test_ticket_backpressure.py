"""Adaptive batching on the real broker: a backlog far above the buffer bound pauses fetching, the paused
partitions resume, and every ticket comes out once, in order per key."""

from __future__ import annotations

import uuid
from collections import defaultdict

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import Topics
from harness.processes import wait_until

from streamer.topics import TICKETS

pytestmark = pytest.mark.kafka

BUDGET = 64  # tokens: the marks grow to 1.5 s of model work, a few hundred tickets, so the waves are larger
KEYS = 12
PER_KEY = 30


def read_all(cluster: Topics, want: int, timeout: float) -> list[tuple[int, int, dict[str, object]]]:
    """(partition, offset, value) of the enriched topic from the beginning, until ``want`` records or the timeout."""
    found = cluster.read("support.tickets.enriched.v1", until=want, timeout=timeout)
    return [(m.partition, m.offset, m.json()) for m in found]


def ticket(key: int, seq: int) -> tuple[bytes, bytes]:
    body = f"Where is my refund for order ORD-{key}{seq:03d}? It has been two weeks. " * (1 + seq % 3)
    value = {
        "id": f"K{key}-{seq:03d}",
        "created_at": "2026-11-28T09:00:00Z",
        "body": body,
        "customer": {"id": f"C-{key}", "tier": "pro"},
    }
    return f"K{key}".encode(), orjson.dumps(value)


PAUSED, RESUMED = "fetching paused: inference behind", "fetching resumed"


def test_paused_partitions_resume_and_nothing_is_lost_or_reordered_per_key(
    topic_factory: TopicFactory, worker_factory: WorkerFactory
) -> None:
    cluster = topic_factory(label="bp")
    env = {
        "STREAMER_BATCHING": "adaptive",
        "STREAMER_BATCH_MAX_TOKENS": str(BUDGET),
        "STREAMER_LOG_LEVEL": "INFO",
    }
    # Two waves above the buffer's bound: the first pauses fetching, and the partitions must resume, or the
    # second (produced only after that) would never be fetched.
    waves = [[ticket(k, seq) for seq in range(w * PER_KEY, (w + 1) * PER_KEY) for k in range(KEYS)] for w in (0, 1)]
    records = [r for wave in waves for r in wave]
    proc = worker_factory(cluster, group=f"test-bp-{uuid.uuid4().hex[:8]}", env=env)
    try:
        warm = [ticket(99, 0)]
        cluster.produce(TICKETS, warm)
        assert len(read_all(cluster, 1, 120)) == 1, "worker never answered"
        cluster.produce(TICKETS, waves[0])
        wait_until(lambda: bool(proc.events(RESUMED)), 180, "fetching to resume")
        assert proc.alive, "worker died"
        cluster.produce(TICKETS, waves[1])
        out = read_all(cluster, len(records) + 1, 180)
        assert proc.alive, "worker died"
    finally:
        proc.terminate(60)

    paused, resumed = proc.events(PAUSED), proc.events(RESUMED)
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
