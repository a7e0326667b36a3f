"""The log service's consumer loop without a broker: records fetched across a rebalance are put back.

A fetch can return while a rebalance is under way (the group revoked partitions during ``getmany``). Those
records must not be triaged by a worker that may no longer own them: the service seeks back to the first
of them where it still owns the partition (and reads them again), and leaves the rest to the next owner,
which reads from the committed offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from streamer.agents.logs import LogService
from streamer.events import DecodeLimits, Output, RawEvent
from streamer.headers import SOURCE_LOGS, Contracts
from streamer.kafka.sender import Sender
from streamer.logs.triage import LogTriageState
from streamer.pipeline.batch import Batch
from streamer.pipeline.logs import LogProcessor
from streamer.triage.outputs import ModelInfo

P0, P1 = TopicPartition("ops.logs.v1", 0), TopicPartition("ops.logs.v1", 1)


@dataclass
class Message:
    offset: int
    value: bytes
    key: bytes | None = b"svc"
    timestamp: int = 1_795_860_000_000
    headers: tuple[tuple[str, bytes], ...] = ()


def messages(first: int, n: int) -> list[Message]:
    return [Message(first + i, f"connection reset by peer {first + i}".encode()) for i in range(n)]


class Stub:
    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        return [("other", 0.5)] * len(templates)


class Recorded(LogProcessor):
    """The real processor, remembering which records it was given."""

    seen: list[tuple[int, int]]

    def __call__(self, raws: Sequence[RawEvent]) -> Batch:
        self.seen.extend((r.source.partition, r.source.offset) for r in raws)
        return super().__call__(raws)


class Sent(Sender):
    """Acknowledges every batch at once (what the brokers would say), remembering what was sent."""

    def __init__(self) -> None:
        super().__init__(lambda: None)  # type: ignore[arg-type,return-value]
        self.sent: list[Output] = []

    async def send(self, outputs: Sequence[Output]) -> None:
        self.sent.extend(outputs)


class RebalancingConsumer:
    """Returns scripted fetches; the first one comes back after the group revoked ``P1`` (a rebalance)."""

    def __init__(self, service: LogService) -> None:
        self.service = service
        self.owned = {P0, P1}
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.fetches = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        if self.fetches == 1:
            # the rebalance starts while this fetch is in flight: P1 goes to another member
            self.service._generation += 1
            self.owned = {P0}
            return {P0: messages(10, 3), P1: messages(40, 2)}
        if self.fetches == 2:  # after the seek, the consumer reads P0 again from offset 10
            assert self.seeks, "P0 was not put back"
            return {P0: messages(10, 3)}
        self.service._stopping = True
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


async def test_a_fetch_that_returns_during_a_rebalance_is_read_again_where_still_owned() -> None:
    processor = Recorded(
        LogTriageState(), Stub(), ModelInfo("m", "1"), DecodeLimits(), Contracts({}, SOURCE_LOGS, ("m", "1"))
    )
    processor.seen = []
    sender = Sent()
    batches: list[Batch] = []
    service = LogService(
        processor=processor,
        sender=sender,
        make_consumer=lambda: None,  # type: ignore[arg-type,return-value]
        store=None,  # type: ignore[arg-type]
        executor=None,
        on_batch=batches.append,
    )
    consumer = RebalancingConsumer(service)
    service._consumer = consumer  # type: ignore[assignment]
    service._idle, service._ready = asyncio.Event(), asyncio.Event()
    service._idle.set()
    service._ready.set()

    await asyncio.wait_for(service._consume(), 10)
    assert service._delivery is not None
    await service._delivery

    assert consumer.seeks == [(P0, 10)]  # put back where still owned; P1 left to its next owner
    assert processor.seen == [(0, 10), (0, 11), (0, 12)]  # the fetch across the rebalance was not triaged
    assert [b.size for b in batches] == [3]
    assert consumer.commits == [{P0: 13}]
    assert batches[0].offsets == {P0: 13}
    enriched = [o for o in sender.sent if o.topic == "ops.logs.enriched.v1"]
    assert len(enriched) == 3 and all(o.key == b"svc" for o in enriched)
