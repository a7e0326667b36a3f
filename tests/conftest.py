"""Shared fixtures: a real Kafka broker for the session, and names no two tests share.

The broker is ``STREAMER_KAFKA_BOOTSTRAP`` when set; otherwise a broker of this session's own is started on a
free pair of ports with a temporary data dir, and stopped at the end: a Kafka that already holds 9092 (a
user's own, or a second checkout's tests) is never touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker for this test session."""
    configured = os.environ.get("STREAMER_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    from streamer.kafka import local

    data_dir = tmp_path_factory.mktemp("session-kafka")
    broker = local.start(local.free_port_pair(), data_dir, timeout=120)
    try:
        asyncio.run(_until_groups_work(broker.bootstrap_servers))
        yield broker.bootstrap_servers
    finally:
        local.stop(data_dir)


async def _until_groups_work(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Wait until a fresh broker has a group coordinator (it creates ``__consumer_offsets`` on first use).

    Without this, whichever test first commits an offset on a new broker meets
    ``GroupCoordinatorNotAvailableError`` for a few seconds, and which test that is depends on the order.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    topic = "t.session-warmup"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    deadline = asyncio.get_running_loop().time() + timeout_s
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="t.session-warmup", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        while True:
            try:
                await consumer.commit({tp: 0})
                return
            except KafkaError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with a group id of this test's own."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:10]}",
        topics_dir=REPO / "topics",
    )


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name("tickets")`` gives a topic or group name that no other test (or run) uses."""
    test = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")
    run = uuid.uuid4().hex[:8]

    def make(base: str) -> str:
        return f"t.{test}.{run}.{base}"

    return make


@pytest.fixture
def run_async() -> Callable[..., object]:
    """Run a coroutine to completion in a fresh loop (tests stay plain functions)."""

    def run(coro: object) -> object:
        return asyncio.run(coro)  # type: ignore[arg-type]

    return run


@pytest.fixture(scope="session")
def test_bundle() -> Path:
    """The default bundle built from the shipped examples (built once, reused while the data is unchanged)."""
    from streamer.defaults import ensure_default_bundle

    return ensure_default_bundle(Settings(bundle_dir=REPO / "var" / "bundles" / "default"), progress=False)
