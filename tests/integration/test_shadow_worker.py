"""A shadow bundle on the real broker: the shadow topic fills, and the agreement metric equals a count made
from the records themselves."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streamer.demo import demo_tickets
from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.pipeline.shadow import shadow_topic
from streamer.settings import Settings
from streamer.topics import SchemaRegistry, load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
SHADOW_VERSION = f"shadow-{uuid.uuid4().hex[:6]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _consume(bootstrap: str, topic: str, ids: set[str], timeout: float = 120.0) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        found: dict[str, dict[str, Any]] = {}
        try:
            deadline = time.monotonic() + timeout
            parts: list[Any] = []
            while not parts and time.monotonic() < deadline:
                try:
                    parts = await topic_partitions(consumer, topic)
                except Exception:  # the worker creates the shadow topic when it starts
                    await asyncio.sleep(0.5)
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while len(found) < len(ids) and time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for m in messages:
                        value = orjson.loads(m.value)
                        if value["id"] in ids:
                            found[value["id"]] = value
            return list(found.values())
        finally:
            await consumer.stop()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def shadow_bundle(test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test bundle with another version, a strong neighbour vote and a 30% budget: same encoder, so
    the shadow reuses the live embeddings, and decisions that differ on some tickets."""
    out = tmp_path_factory.mktemp("shadow") / "bundle"
    shutil.copytree(test_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = SHADOW_VERSION
    intent = manifest["heads"]["intent"]
    intent["knn_weight"] = 0.9
    intent["escalation"]["rate"] = 0.3
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def setup(
    kafka_bootstrap: str, test_bundle: Path, shadow_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, int, subprocess.Popen[bytes]]]:
    prefix = f"t.shadow.{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topics_dir=REPO / "topics")
    asyncio.run(apply_topics(settings, load_catalog(settings.topics_file).topics.values()))
    port = _free_port()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMER_TOPIC_PREFIX": prefix,
        "STREAMER_GROUP_ID": f"test-shadow-{uuid.uuid4().hex[:8]}",
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_SHADOW_BUNDLE_DIR": str(shadow_bundle),
        "STREAMER_METRICS_HOST": "127.0.0.1",
        "STREAMER_METRICS_PORT": str(port),
        "STREAMER_MAX_BATCH": "16",
        "STREAMER_LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker", "--only", "tickets"], env=env, stdout=log, stderr=log
        )
        yield kafka_bootstrap, prefix, port, proc
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.returncode not in (0, -15):
        print(log_path.read_text()[-5000:])


def _shadow_counts(port: int) -> Counter[tuple[str, str, str]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts: Counter[tuple[str, str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "streamer_shadow_decisions_total":
                counts[(s.labels["head"], s.labels["label"], s.labels["agreement"])] += int(s.value)
    return counts


def test_shadow_topic_fills_and_agreement_metric_matches_the_records(
    setup: tuple[str, str, int, subprocess.Popen[bytes]],
) -> None:
    bootstrap, prefix, port, worker = setup
    tickets = list(demo_tickets(80, seed=11))
    for t in tickets:
        t["id"] = f"{t['id']}-{uuid.uuid4().hex[:4]}"
    ids = {t["id"] for t in tickets}

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for t in tickets:
                await producer.send(prefix + "support.tickets.v1", orjson.dumps(t), key=t["id"].encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(produce())
    live = {r["id"]: r for r in _consume(bootstrap, prefix + "support.tickets.enriched.v1", ids)}
    shadow = {r["id"]: r for r in _consume(bootstrap, prefix + shadow_topic(SHADOW_VERSION), ids)}
    assert worker.poll() is None, "worker died"
    assert set(live) == ids and set(shadow) == ids
    expected: Counter[tuple[str, str, str]] = Counter()
    for tid in ids:
        a, b = live[tid], shadow[tid]
        assert REGISTRY.errors("enriched_ticket.v1.json", b) == []
        assert b["model"]["version"] == SHADOW_VERSION and a["model"]["version"] != SHADOW_VERSION
        for head in ("intent", "priority", "sentiment"):
            la, lb = a["triage"][head]["label"], b["triage"][head]["label"]
            expected[(head, la, "agree" if la == lb else "disagree")] += 1
        ea, eb = a["triage"]["escalation"]["escalate"], b["triage"]["escalation"]["escalate"]
        expected[("escalate", str(ea).lower(), "agree" if ea == eb else "disagree")] += 1
    # the shadow differs somewhere (30% budget vs the live one), else this test would prove little
    assert any(k[2] == "disagree" for k in expected) and any(k[2] == "agree" for k in expected)
    deadline = time.monotonic() + 30
    got = _shadow_counts(port)
    while sum(got.values()) < sum(expected.values()) and time.monotonic() < deadline:
        time.sleep(0.5)  # metrics count a batch once its outputs are acknowledged
        got = _shadow_counts(port)
    assert got == expected
