"""The log path's Kafka clients besides the sender: its group consumer and the published templates.

``TemplateStore`` reads the compacted ``ops.log_templates.v1`` from the beginning to its end offsets (at
start, before any log is consumed) and then from where it stopped (on every partition assignment). Loading
those records into the ``LogTriageState`` keeps template ids stable across restarts: a line maps to the
template that earlier lines generalised, not to a fresh specific one, and templates already alerted on
(``error_seen``) do not alert again. Ids are content hashes, so what other workers published agrees with
what this one mines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.kafka import clients
from streamer.runtime import log_group_id
from streamer.settings import Settings
from streamer.topics import LOG_TEMPLATES

__all__ = ["TemplateStore", "log_consumer", "template_store"]

log = structlog.get_logger(__name__)


class TemplateStore:
    """The compacted templates topic, read up to its end offsets; each ``catch_up`` continues where the last stopped.

    Args:
        make_consumer: a consumer without a group (it assigns every partition itself and never commits).
        topic: the templates topic as named on the cluster (prefix included).
        timeout_s: limit on one catch-up; a topic that cannot be read to its end in time is a start-up error.
    """

    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer], topic: str, *, timeout_s: float = 60.0) -> None:
        self._make_consumer = make_consumer
        self.topic = topic
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self.skipped = 0

    async def start(self) -> None:
        consumer = self._make_consumer()
        await consumer.start()
        try:
            self._partitions = await clients.topic_partitions(consumer, self.topic)
            consumer.assign(self._partitions)
            await consumer.seek_to_beginning(*self._partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def catch_up(self) -> list[dict[str, Any]]:
        """Template records published since the last call (all of them on the first), the latest per id."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("TemplateStore.catch_up() before start()")
        ends: dict[TopicPartition, int] = await consumer.end_offsets(self._partitions)
        latest: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout_s
        while True:
            behind = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} to its end took more than {self.timeout_s:g} s")
            fetched = await consumer.getmany(*behind, timeout_ms=500, max_records=10_000)
            for messages in fetched.values():
                for message in messages:
                    self._apply(latest, message.key, message.value)
        return list(latest.values())

    def _apply(self, latest: dict[str, dict[str, Any]], key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone: the id is gone from the topic
            if key is not None:
                latest.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("template_id"), str):
            self.skipped += 1
            log.warning("unreadable template record skipped", topic=self.topic, key=repr(key)[:80])
            return
        latest.pop(doc["template_id"], None)  # re-insert: the latest record of an id is applied last
        latest[doc["template_id"]] = doc

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def log_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """The log path's group consumer: manual commits, from the earliest offset when the group has none."""
    options: dict[str, Any] = {
        "group_id": log_group_id(settings),
        "client_id": f"{settings.kafka_client_id}-logs",
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        # Static membership per group: the same id serves the ticket group and this one.
        "group_instance_id": settings.group_instance_id,
    }
    options.update(overrides)
    return clients.consumer(settings, **options)


def template_store(settings: Settings, *, timeout_s: float | None = None) -> TemplateStore:
    """A store on ``ops.log_templates.v1`` (with the topic prefix) for this worker's settings."""
    return TemplateStore(
        lambda: clients.consumer(settings, group_id=None, client_id=f"{settings.kafka_client_id}-templates"),
        settings.topic(LOG_TEMPLATES),
        timeout_s=timeout_s if timeout_s is not None else max(settings.kafka_request_timeout_ms / 1000 * 4, 30.0),
    )
