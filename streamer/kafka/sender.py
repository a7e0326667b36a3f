"""The one sender of every path (tickets, logs, the bridge): a batch of outputs in, acknowledged by the brokers out.

``producer.send()`` per record costs a coroutine, a partitioner call and an accumulator lookup per record;
here a batch's records are partitioned like the Java client's default partitioner (murmur2 of the key,
cached per key) and appended to one producer batch per partition, which leaves in one request, and every
acknowledgement is awaited together. Records without a key go to one partition per batch, in turn.

One delivery policy: a failed batch is resent whole, with a fresh producer (new producer id, clean state)
after a backoff (0.5 s doubling to 10 s), until the brokers hold every record. Records that made it the
first time are then duplicated, which at-least-once allows (every record carries its input id, for
consumers to drop duplicates); losses are not allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from streamer.events import Output

__all__ = ["Partitioner", "Sender", "key_partition"]

log = structlog.get_logger(__name__)


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``key`` among ``partitions`` (sorted ids), as Java's default partitioner picks it."""
    hashed: int = murmur2(key)
    return partitions[(hashed & 0x7FFFFFFF) % len(partitions)]


class Partitioner:
    """Partition choice of one sender: keyed records by ``key_partition`` (cached per topic and key), records
    without a key on one partition per batch, the next one each batch."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes], int] = {}
        self._turn = 0

    def next_batch(self) -> None:
        """Start a batch: records without a key move on to the next partition."""
        self._turn += 1

    def known(self, topic: str, partitions: Sequence[int]) -> list[int]:
        """``partitions`` of ``topic`` sorted; keys cached for another partition count are forgotten."""
        ordered = sorted(partitions)
        if self._partitions.get(topic) != ordered:
            self._partitions[topic] = ordered
            self._by_key = {k: p for k, p in self._by_key.items() if k[0] != topic}
        return ordered

    def partition(self, topic: str, key: bytes | None, partitions: Sequence[int]) -> int:
        """Where a record of ``topic`` goes, among ``partitions`` (as ``known`` returned them)."""
        if key is None:
            return partitions[self._turn % len(partitions)]
        found = self._by_key.get((topic, key))
        if found is None:
            if len(self._by_key) >= self.max_keys:
                self._by_key.clear()
            found = self._by_key[(topic, key)] = key_partition(key, partitions)
        return found


class Sender:
    """Produces every record of a batch, then awaits all acknowledgements (acks=all, idempotent producer).

    Args:
        make_producer: a new, unstarted producer (``streamer.kafka.clients.producer``). It is started on
            first use, inside the caller's event loop (aiokafka clients bind to the loop they start in).
        topic_prefix: prepended to every output's declared topic.
    """

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer], *, topic_prefix: str = "") -> None:
        self._make_producer = make_producer
        self.topic_prefix = topic_prefix
        self._producer: AIOKafkaProducer | None = None
        self._lock: asyncio.Lock | None = None
        self.partitioner = Partitioner()
        self.retry_initial_s = 0.5
        self.retry_max_s = 10.0

    async def start(self) -> None:
        """Start the producer now (else the first ``send`` does)."""
        await self._producer_started()

    async def close(self) -> None:
        await self._reset()

    async def send(self, outputs: Sequence[Output]) -> None:
        """Return once the brokers hold every record of ``outputs``, retrying (the whole batch) until they do."""
        if not outputs:
            return
        delay = self.retry_initial_s
        while True:
            try:
                await self._send_once(outputs)
                return
            except (KafkaError, OSError) as exc:
                log.warning("sending outputs failed; retrying", error=repr(exc), records=len(outputs), delay_s=delay)
                await self._reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._producer is None:
                producer = self._make_producer()
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _send_once(self, outputs: Sequence[Output]) -> None:
        producer = await self._producer_started()
        partitioner = self.partitioner
        partitioner.next_batch()
        by_topic: dict[str, list[Output]] = {}
        for out in outputs:
            by_topic.setdefault(out.topic, []).append(out)
        pending: list[asyncio.Future[Any]] = []
        for declared, outs in by_topic.items():
            topic = self.topic_prefix + declared
            partitions = partitioner.known(topic, await producer.partitions_for(topic))
            by_partition: dict[int, list[Output]] = {}
            for out in outs:
                by_partition.setdefault(partitioner.partition(topic, out.key, partitions), []).append(out)
            for partition, items in by_partition.items():
                batch = producer.create_batch()
                for out in items:
                    key, value, headers = out.key, out.data, list(out.headers)
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                        continue
                    if batch.record_count():
                        pending.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                            continue
                    # Larger than a whole batch: let the producer's own checks take it (or refuse it).
                    pending.append(
                        await producer.send(topic, value, key=key, partition=partition, headers=headers or None)
                    )
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)

    async def _reset(self) -> None:
        """Drop a producer that failed; the next send starts a new one (new producer id, clean state)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except (KafkaError, OSError) as exc:
                log.debug("stopping a failed producer failed too", error=repr(exc))
