"""Consumer lag of the partitions this worker owns, per consumer group, from a side consumer per group.

A worker belongs to two groups: ``<STREAMER_GROUP_ID>`` (tickets, the Faust app) and
``<STREAMER_GROUP_ID>-logs`` (the log path's own consumer). Committed offsets are asked per group, so each
group gets a probe of its own. A probe's consumer carries the group id but never subscribes: it never
joins the group or takes part in its rebalances; it asks the brokers for the log end offsets and the
group's committed offsets of the partitions given to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from streamer.pipeline import Path
from streamer.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

__all__ = ["LAG_INTERVAL_S", "LagProbe", "lag_probe"]

#: Seconds between two consumer-lag measurements (one ListOffsets and one OffsetFetch per partition).
LAG_INTERVAL_S = 5.0


class LagProbe:
    """Log end and committed offsets of one group's partitions that this worker owns.

    Args:
        make_consumer: a consumer with the group's id (it never subscribes).
        group: the consumer group measured (the ``group`` label of ``streamer_consumer_lag``).
        path: the path that group serves (``tickets`` or ``logs``).
    """

    def __init__(
        self, make_consumer: Callable[[], AIOKafkaConsumer], *, group: str = "", path: Path = "tickets"
    ) -> None:
        self._make_consumer = make_consumer
        self._consumer: AIOKafkaConsumer | None = None
        self.group = group
        self.path: Path = path

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = self._make_consumer()
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def lag(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Lag per partition; with none, one metadata request (which still proves the brokers answer)."""
        client = await self._client()
        tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
        if not tps:
            await client.topics()
            return {}
        ends: Mapping[TopicPartition, int] = await client.end_offsets(tps)
        committed = await asyncio.gather(*(client.committed(tp) for tp in tps))
        never = [tp for tp, offset in zip(tps, committed, strict=True) if offset is None]
        starts: Mapping[TopicPartition, int] = await client.beginning_offsets(never) if never else {}
        lags: dict[tuple[str, int], int] = {}
        for tp, offset in zip(tps, committed, strict=True):
            base = offset if offset is not None else starts.get(tp, 0)
            lags[(tp.topic, tp.partition)] = max(int(ends[tp]) - int(base), 0)
        return lags

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def lag_probe(settings: Settings, group: str | None = None, path: Path = "tickets") -> LagProbe:
    """A probe of ``group`` (default ``STREAMER_GROUP_ID``) with our connection options; it never joins it."""
    from streamer.kafka import clients

    group_id = group if group is not None else settings.group_id
    suffix = "lag" if path == "tickets" else f"{path}-lag"
    return LagProbe(
        lambda: clients.consumer(settings, group_id=group_id, client_id=f"{settings.kafka_client_id}-{suffix}"),
        group=group_id,
        path=path,
    )
