"""Shared fixtures: a real Kafka broker for the session, names no two tests share, and the Kafka test harness
(``tests/harness``: ``topic_factory``, ``produce``, ``read_topic``, ``worker_factory``, ``broker_factory``,
``cluster_factory``; see ``harness.fixtures``).

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
from harness.fixtures import (  # noqa: F401  (registered as fixtures for every test)
    broker_factory,
    cluster_factory,
    module_topic_factory,
    module_worker_factory,
    produce,
    read_topic,
    topic_factory,
    worker_factory,
)
from harness.kafka import until_groups_work

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
        asyncio.run(until_groups_work(broker.bootstrap_servers))
        yield broker.bootstrap_servers
    finally:
        local.stop(data_dir)


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
