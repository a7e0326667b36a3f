"""Shared fixtures: a real Kafka broker for the session, and names no two tests share.

The broker is ``STREAMER_KAFKA_BOOTSTRAP`` when set; otherwise the project's local broker is started for
the session (and stopped at the end only if this session started it).
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
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real broker for this test session."""
    configured = os.environ.get("STREAMER_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    from streamer.kafka import local
    from streamer.kafka.admin import delete_topics_where

    broker = local.start()
    settings = Settings(kafka_bootstrap=broker.bootstrap_servers)
    before = asyncio.run(_topic_names(settings))
    try:
        yield broker.bootstrap_servers
    finally:
        # Every test makes topics of its own (``t.`` prefix); left behind, thousands of them pile up on the
        # development broker over many runs and its next start has to load them all.
        asyncio.run(
            delete_topics_where(settings, lambda name: name.startswith("t.") and name not in before, settle_s=2.0)
        )
        if not broker.already_running:
            local.stop(broker.data_dir)


async def _topic_names(settings: Settings) -> set[str]:
    from streamer.kafka.clients import admin_client

    async with admin_client(settings) as admin:
        return set(await admin.list_topics())


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
