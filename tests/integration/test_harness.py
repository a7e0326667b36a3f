"""The test harness itself on the real broker: what it sends is what it reads back, topics made to be
deleted are, and a worker built in this process triages and reports its batches to the test."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import Out, all_ids

from streamer.demo import demo_tickets
from streamer.kafka.admin import list_topics
from streamer.topics import DEADLETTER, TICKETS, TICKETS_ENRICHED

pytestmark = pytest.mark.kafka


def test_records_read_back_with_keys_headers_partitions_and_timestamps(topic_factory: TopicFactory) -> None:
    topics = topic_factory([TICKETS], partitions=3)
    stamp = 1_700_000_000_000
    placed = topics.produce(
        TICKETS,
        [
            Out(b"k0", b'{"id": "a"}', headers=[("h", b"1")], partition=2, timestamp_ms=stamp),
            (b"k1", b'{"id": "b"}', [("h", b"2")]),
            (b"k2", None),
        ],
    )
    assert placed[0] == (2, 0) and len(placed) == 3
    got = {m.key: m for m in topics.read(TICKETS)}
    assert set(got) == {b"k0", b"k1", b"k2"}
    first = got[b"k0"]
    assert (first.topic, first.partition, first.offset) == (topics.topic(TICKETS), 2, 0)
    assert first.timestamp_ms == stamp and first.header_dict == {"h": b"1"} and first.json() == {"id": "a"}
    assert got[b"k1"].headers == (("h", b"2"),) and got[b"k2"].value is None
    assert sorted(v["id"] for v in topics.docs(TICKETS)) == ["a", "b"]  # the tombstone is not a document
    # Reading until a count: what matches; when the time is up, what was found.
    assert [m.key for m in topics.read(TICKETS, until=1, match=lambda m: m.key == b"k1")] == [b"k1"]
    began = time.monotonic()
    assert len(topics.read(TICKETS, until=4, timeout=2)) == 3
    assert time.monotonic() - began >= 2


def test_topics_made_to_be_deleted_are_gone_after_teardown(kafka_bootstrap: str) -> None:
    factory = TopicFactory(kafka_bootstrap, "harness")
    kept, deleted = factory([DEADLETTER]), factory([DEADLETTER], delete=True)
    factory.close()
    deadline = time.monotonic() + 60
    while True:
        names = {s.name for s in asyncio.run(list_topics(kept.settings))}
        if deleted.topic(DEADLETTER) not in names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert kept.topic(DEADLETTER) in names
    assert deleted.topic(DEADLETTER) not in names


def test_an_in_process_worker_triages_and_reports_its_batches(
    topic_factory: TopicFactory, worker_factory: WorkerFactory
) -> None:
    topics = topic_factory()
    batches: list[Any] = []
    worker = worker_factory.in_process(topics, options={"on_batch": batches.append}, max_batch=8)
    run = uuid.uuid4().hex[:6]
    tickets = list(demo_tickets(12, seed=5))
    for t in tickets:
        t["id"] = f"{t['id']}-{run}"
    ids = {t["id"] for t in tickets}
    topics.produce(TICKETS, [(t["id"].encode(), orjson.dumps(t)) for t in tickets])
    enriched = topics.docs(TICKETS_ENRICHED, until=all_ids(ids), match=lambda v: v["id"] in ids)
    assert worker.alive
    worker.stop()
    assert {v["id"] for v in enriched} == ids
    assert len(batches) >= 2  # 12 tickets, at most 8 a batch: the settings override reached the worker
