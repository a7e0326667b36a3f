"""Topics on a real broker and the records in them: one producer and one reader for every test.

A test's topics are the declared ones (``topics/topics.yaml``) behind a prefix of its own, so tests sharing
the session broker never see each other's records. Sending waits for every acknowledgement; reading starts
at the beginning of every partition and has no consumer group (it commits nothing and disturbs no worker).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamer.kafka.admin import apply_topics
from streamer.settings import Settings
from streamer.topics import load_catalog

REPO = Path(__file__).resolve().parents[2]
TOPICS_DIR = REPO / "topics"
CATALOG = load_catalog(TOPICS_DIR / "topics.yaml")

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Out:
    """A record to send, when a key and a value are not all: headers, a chosen partition, a timestamp."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None
    timestamp_ms: int | None = None


#: What ``produce`` takes: ``(key, value)``, ``(key, value, headers)`` or an ``Out``.
Record = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Headers] | Out


@dataclass(frozen=True)
class Message:
    """A record as read back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def json(self) -> Any:
        """The value decoded as JSON (``None`` for a tombstone)."""
        return None if self.value is None else orjson.loads(self.value)

    @property
    def header_dict(self) -> dict[str, bytes]:
        return dict(self.headers)


#: Large enough for the biggest hostile record (10 MiB); acks from every in-sync replica.
PRODUCER_OPTIONS: dict[str, Any] = {
    "linger_ms": 5,
    "max_request_size": 15 * 1024 * 1024,
    "max_batch_size": 1024 * 1024,
    "acks": "all",
}


def _as_out(record: Record) -> Out:
    if isinstance(record, Out):
        return record
    if len(record) == 3:
        return Out(record[0], record[1], record[2])
    return Out(record[0], record[1])


async def aproduce(
    bootstrap: str, topic: str, records: Iterable[Record], *, client: Mapping[str, Any] | None = None, **options: Any
) -> list[tuple[int, int]]:
    """Send ``records`` to ``topic`` in order and wait for every acknowledgement; their (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER_OPTIONS, **(client or {}), **options})
    await producer.start()
    placed: list[tuple[int, int]] = []
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            out = _as_out(record)
            pending.append(
                await producer.send(
                    topic,
                    out.value,
                    key=out.key,
                    headers=list(out.headers) or None,
                    partition=out.partition,
                    timestamp_ms=out.timestamp_ms,
                )
            )
            if len(pending) >= 2000:
                placed += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
                pending.clear()
        placed += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
    finally:
        await producer.stop()
    return placed


def produce(
    bootstrap: str, topic: str, records: Iterable[Record], *, client: Mapping[str, Any] | None = None, **options: Any
) -> list[tuple[int, int]]:
    """``aproduce`` from synchronous code."""
    return asyncio.run(aproduce(bootstrap, topic, records, client=client, **options))


Until = int | Callable[[list[Message]], bool] | None


async def _partitions(consumer: AIOKafkaConsumer, topic: str, deadline: float) -> list[TopicPartition]:
    """Every partition of ``topic``, waiting for it to exist (a worker may create it as it starts)."""
    while True:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic!r} does not exist")
        await asyncio.sleep(0.5)


async def aread_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    until: Until = None,
    match: Callable[[Message], bool] | None = None,
    timeout: float = 120.0,
    quiet_s: float | None = None,
    client: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Records of ``topics`` from the beginning (those ``match`` accepts, when given).

    - ``until=None``: every record up to each partition's end when the read began (failing past ``timeout``);
    - ``until=N``, or a predicate on what was found: read on until ``N`` are found or the predicate holds, or
      ``timeout`` passes (then what was found);
    - ``quiet_s``: read on until nothing new came for ``quiet_s`` seconds.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        **(client or {}),
    )
    await consumer.start()
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        parts = [tp for topic in topics for tp in await _partitions(consumer, topic, deadline)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts) if until is None and quiet_s is None else {}

        def done() -> bool:
            if isinstance(until, int):
                return len(found) >= until
            return until(found) if until is not None else False

        last = time.monotonic()
        while True:
            if quiet_s is not None:
                if time.monotonic() - last >= quiet_s:
                    return found
            elif until is None:
                if not [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                    return found
                assert time.monotonic() < deadline, f"reading {', '.join(topics)} took over {timeout:.0f} s"
            elif done() or time.monotonic() > deadline:
                return found
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                for m in messages:
                    message = Message(
                        m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp
                    )
                    if match is None or match(message):
                        found.append(message)
                    last = time.monotonic()
    finally:
        await consumer.stop()


async def aread_topic(bootstrap: str, topic: str, **kwargs: Any) -> list[Message]:
    """``aread_topics`` of one topic."""
    return await aread_topics(bootstrap, [topic], **kwargs)


def read_topic(bootstrap: str, topic: str, **kwargs: Any) -> list[Message]:
    """``aread_topics`` of one topic, from synchronous code."""
    return asyncio.run(aread_topics(bootstrap, [topic], **kwargs))


def docs(messages: Iterable[Message]) -> list[Any]:
    """The decoded JSON values of ``messages``, tombstones left out."""
    return [m.json() for m in messages if m.value is not None]


def all_ids(ids: set[str]) -> Callable[[list[Message]], bool]:
    """An ``until`` for reads: every one of ``ids`` is among the ``id`` fields found."""
    return lambda found: ids <= {v["id"] for v in docs(found)}


@dataclass
class Topics:
    """The declared topics behind one prefix on one broker, with the producer and reader bound to them.

    Methods take declared names (``support.tickets.v1``); ``topic(name)`` is the name on the broker.
    """

    bootstrap: str
    prefix: str
    settings: Settings
    client: dict[str, Any] = field(default_factory=dict)  # extra aiokafka options (security)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def produce(self, name: str, records: Iterable[Record], **options: Any) -> list[tuple[int, int]]:
        return produce(self.bootstrap, self.topic(name), records, client=self.client, **options)

    async def aproduce(self, name: str, records: Iterable[Record], **options: Any) -> list[tuple[int, int]]:
        return await aproduce(self.bootstrap, self.topic(name), records, client=self.client, **options)

    def read(self, name: str, **kwargs: Any) -> list[Message]:
        """``read_topic`` of ``name`` (see ``aread_topics`` for ``until``, ``match``, ``timeout``)."""
        return read_topic(self.bootstrap, self.topic(name), client=self.client, **kwargs)

    async def aread(self, name: str, **kwargs: Any) -> list[Message]:
        return await aread_topic(self.bootstrap, self.topic(name), client=self.client, **kwargs)

    def docs(
        self, name: str, *, until: Until = None, match: Callable[[Any], bool] | None = None, **kwargs: Any
    ) -> list[Any]:
        """Decoded JSON values of ``name`` (tombstones skipped); ``match`` sees the decoded value."""
        accept = None if match is None else (lambda m: m.value is not None and bool(match(m.json())))
        return docs(self.read(name, until=until, match=accept, **kwargs))


def create_topics(
    bootstrap: str,
    label: str,
    names: Iterable[str] | None = None,
    *,
    partitions: int | Mapping[str, int] | None = None,
    client: Mapping[str, Any] | None = None,
    prefix: str | None = None,
    **settings: Any,
) -> Topics:
    """Create the declared topics ``names`` (default: all) behind a new prefix ``t.<label>.<random>.``.

    ``partitions`` overrides the declared counts (one for all, or per name); ``settings`` are further
    ``Settings`` fields (replication, security, and whatever the test's own clients need).
    """
    prefix = prefix if prefix is not None else f"t.{label}.{uuid.uuid4().hex[:8]}."
    config = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topics_dir=TOPICS_DIR, **settings)
    specs = [CATALOG[name] for name in (CATALOG.topics if names is None else names)]
    if isinstance(partitions, int):
        specs = [replace(spec, partitions=partitions) for spec in specs]
    elif partitions is not None:
        specs = [replace(spec, partitions=partitions.get(spec.name, spec.partitions)) for spec in specs]
    asyncio.run(apply_topics(config, specs))
    return Topics(bootstrap, prefix, config, dict(client or {}))


async def until_groups_work(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Wait until a fresh broker has a group coordinator (it creates ``__consumer_offsets`` on first use).

    Without this, whichever test first commits an offset on a new broker meets
    ``GroupCoordinatorNotAvailableError`` for a few seconds, and which test that is depends on the order.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
