"""Producing a batch's outputs together and waiting for the brokers to acknowledge all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamer.events import DecodeFailure, Output, encode

log = structlog.get_logger(__name__)


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
        self.retry_initial_s = 0.5
        self.retry_max_s = 10.0

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
        """Return once the brokers hold every record, retrying (with a fresh producer) until they do.

        A retry resends the whole batch: records that made it the first time are duplicated, which
        at-least-once allows (every record carries the input id for consumers to drop duplicates).
        """
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

    async def _send_once(self, outputs: Sequence[Output]) -> None:
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

    async def _reset(self) -> None:
        """Drop a producer that failed; the next send starts a new one (new producer id, clean state)."""
        producer, self._producer, self._started = self._producer, None, False
        if producer is not None:
            try:
                await producer.stop()
            except (KafkaError, OSError) as exc:
                log.debug("stopping a failed producer failed too", error=repr(exc))


def log_dead_letter(failure: DecodeFailure, event: str = "record dead-lettered") -> None:
    """Where it came from and why, never the content: the message may quote the input (schema errors do)."""
    source = failure.raw.source
    log.info(
        event,
        event_id=failure.id,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        code=failure.code,
        field=failure.field,
    )
