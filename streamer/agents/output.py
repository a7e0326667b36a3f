"""Producing a batch's outputs together and waiting for the brokers to acknowledge all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from streamer.events import Output, encode


class OutputSender:
    """Sends every record of a batch, then awaits all acknowledgements (acks=all, idempotent producer).

    Awaiting each record would cost a round trip per record; a batch's records share them. The producer
    starts on first use, inside the worker's event loop
    (aiokafka clients bind to the loop they are created in).
    """

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer], *, topic_prefix: str = "") -> None:
        self._make_producer = make_producer
        self._producer: AIOKafkaProducer | None = None
        self.topic_prefix = topic_prefix
        self._started = False
        self._lock: asyncio.Lock | None = None

    async def start(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._started:
                self._producer = self._make_producer()
                await self._producer.start()
                self._started = True

    async def close(self) -> None:
        if self._started and self._producer is not None:
            self._started = False
            await self._producer.stop()

    async def send_all(self, outputs: Sequence[Output]) -> None:
        """Return once the brokers hold every record; raises if any could not be written."""
        if not outputs:
            return
        if not self._started:
            await self.start()
        producer = self._producer
        assert producer is not None
        pending = [
            await producer.send(
                self.topic_prefix + out.topic, encode(out.value), key=out.key, headers=list(out.headers) or None
            )
            for out in outputs
        ]
        await asyncio.gather(*pending)
