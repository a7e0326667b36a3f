"""The ticket agent: Faust's loop around ``streamer.pipeline.tickets.TicketProcessor``.

The agent only moves bytes: it takes a batch, hands it to the processor in the inference thread (the event
loop never runs the model nor encodes JSON), produces every output of the batch together
(``streamer.kafka.sender``) and waits for the brokers' acknowledgement before Faust may commit the batch's
offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import faust
import orjson
import structlog
from faust.types import TP

from streamer.batching import BatchPlanner, BatchPolicy, estimate_tokens
from streamer.events import RawEvent, Source
from streamer.kafka.sender import Sender
from streamer.pipeline.batch import Batch
from streamer.pipeline.tickets import TicketProcessor
from streamer.topics import TICKETS

log = structlog.get_logger(__name__)


def raw_event(event: faust.types.EventT) -> RawEvent:
    """Faust's event as our transport-free ``RawEvent``."""
    message = event.message
    timestamp = getattr(message, "timestamp", None)
    headers = message.headers
    return RawEvent(
        value=message.value,
        key=message.key,
        headers=tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers or ()),
        source=Source(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(timestamp * 1000) if timestamp else None,
        ),
    )


def offset_ranges(events: Sequence[faust.types.EventT]) -> dict[str, list[int]]:
    """``{"topic:partition": [first, last]}`` of a batch: where it came from, for logs."""
    ranges: dict[str, list[int]] = {}
    for event in events:
        message = event.message
        span = ranges.setdefault(f"{message.topic}:{message.partition}", [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    return ranges


def ticket_text_bytes(value: bytes | None) -> int:
    """UTF-8 bytes of a raw ticket's subject and body (what the encoder reads), for the token estimate.

    Parsing here costs a few microseconds a record, next to milliseconds of inference; input that does not
    parse counts as its raw size (it is dead-lettered, never encoded, but it still occupies the buffer).
    """
    if not value:
        return 0
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return len(value)
    if not isinstance(doc, dict):
        return len(value)
    return sum(len(text.encode()) for key in ("subject", "body") if isinstance(text := doc.get(key), str))


class _DropOnRevoke:
    """Registered with Faust's flow control, which clears agents' input buffers when partitions are revoked
    (and on shutdown): records not yet in the model are dropped unacknowledged, so a rebalance waits only
    for the batch in the model and the one being delivered; the partitions' next owner reads the rest from
    the committed offsets.

    A dropped record is also taken off the consumer's set of records in progress: Faust waits for that set
    to empty before it gives partitions up, and the record would stay there as long as anything still
    refers to it (Faust's own stream iterator holds on to the last record it delivered).
    """

    def __init__(self, planner: BatchPlanner[faust.types.EventT, TP], consumer: faust.types.ConsumerT) -> None:
        self.planner = planner
        self.consumer = consumer

    def clear(self) -> None:
        dropped = self.planner.clear()
        in_progress = self.consumer.unacked
        for event in dropped:
            in_progress.discard(event.message)
        if dropped:
            log.info("buffered records dropped on revocation; redelivered from committed offsets", records=len(dropped))


def register_ticket_agent(
    app: faust.App,
    processor: TicketProcessor,
    sender: Sender,
    *,
    max_batch: int,
    max_wait_s: float,
    executor: ThreadPoolExecutor,
    on_batch: Callable[[Batch], None] | None = None,
    topic: str = TICKETS,
    policy: BatchPolicy | None = None,
    max_record_tokens: int = 256,
    on_planner: Callable[[BatchPlanner[faust.types.EventT, TP]], None] | None = None,
) -> None:
    """Attach the ticket agent to ``app``.

    With ``policy`` (``STREAMER_BATCHING=adaptive``), batches are sized by ``BatchPlanner``: the model takes
    what is buffered whenever it is free, within a token budget, and partitions are paused while too much is
    buffered. Without it (``fixed``), Faust's ``take_events``: up to ``max_batch`` records or ``max_wait_s``.

    Either way batches are pipelined: while the brokers acknowledge batch N's outputs, batch N+1 is in the
    model. At most one batch waits for acknowledgements (back-pressure). Faust would acknowledge a batch's
    events as soon as the loop moves on, so each event holds one extra reference, released only once
    the batch's outputs are durable: Faust commits an offset only when every event before it is acked.

    ``on_planner`` is handed each new ``BatchPlanner`` (one per agent start), for the buffer gauges.
    """
    source = app.topic(topic, key_type=bytes, value_type=bytes, allow_empty=True)

    async def deliver(events: Sequence[faust.types.EventT], result: Batch, timing: dict[str, float]) -> None:
        started = time.perf_counter()
        await sender.send(result.outputs)
        processor.tracing.end(result.spans)
        for event in events:
            event.ack()
        if on_batch is not None:
            on_batch(result)
        log.debug(
            "batch done",
            size=len(events),
            offsets=offset_ranges(events),
            outputs=len(result.outputs),
            inference_ms=round(result.inference_s * 1000, 1),
            process_ms=round(timing["process_s"] * 1000, 1),
            deliver_ms=round((time.perf_counter() - started) * 1000, 1),
            oldest_wait_ms=round(timing["oldest_wait_s"] * 1000, 1),
            tokens=int(timing.get("tokens", 0)),
        )

    if policy is None:

        @app.agent(source, name="streamer.agents.tickets")  # type: ignore[untyped-decorator]
        async def triage(stream: faust.StreamT[bytes]) -> None:
            loop = asyncio.get_running_loop()
            in_flight: asyncio.Task[None] | None = None
            try:
                async for events in stream.take_events(max_batch, within=max_wait_s):
                    for event in events:
                        event.message.incref()
                    stamps = [e.message.timestamp for e in events if e.message.timestamp]
                    oldest_wait_s = time.time() - min(stamps) if stamps else 0.0
                    took = time.perf_counter()
                    result = await loop.run_in_executor(executor, processor, [raw_event(e) for e in events])
                    timing = {"process_s": time.perf_counter() - took, "oldest_wait_s": oldest_wait_s}
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(deliver(events, result, timing))
            finally:
                if in_flight is not None and not in_flight.done():
                    await asyncio.shield(in_flight)

        return

    batch_policy = policy

    @app.agent(source, name="streamer.agents.tickets")  # type: ignore[untyped-decorator]
    async def triage_adaptive(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        planner: BatchPlanner[faust.types.EventT, TP] = BatchPlanner(batch_policy)
        if on_planner is not None:
            on_planner(planner)
        dropper = _DropOnRevoke(planner, app.consumer)
        app.flow_control.manage_queue(dropper)  # a weak reference: ``dropper`` lives as long as this agent
        arrived = asyncio.Event()

        async def run_batches() -> None:
            in_flight: asyncio.Task[None] | None = None
            try:
                while True:
                    if not len(planner):
                        arrived.clear()
                        await arrived.wait()
                        continue
                    batch = planner.take(time.time())
                    if batch.resume:
                        for partition in batch.resume:
                            app.consumer.on_buffer_drop(partition)
                        log.info("fetching resumed", partitions=sorted(map(str, batch.resume)), buffered=len(planner))
                    took = time.perf_counter()
                    result = await loop.run_in_executor(executor, processor, [raw_event(e) for e in batch.items])
                    process_s = time.perf_counter() - took
                    planner.observe(batch.tokens, process_s)
                    timing = {"process_s": process_s, "oldest_wait_s": batch.oldest_wait_s, "tokens": batch.tokens}
                    if in_flight is not None:
                        await asyncio.shield(in_flight)
                    in_flight = asyncio.ensure_future(deliver(batch.items, result, timing))
            finally:
                if in_flight is not None and not in_flight.done():
                    await asyncio.shield(in_flight)

        runner = asyncio.ensure_future(run_batches())
        agent_task = asyncio.current_task()

        def batch_loop_ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None and agent_task is not None:
                agent_task.cancel()  # wake the agent from waiting for records, to raise the error below

        runner.add_done_callback(batch_loop_ended)
        try:
            async for event in stream.events():
                message = event.message
                message.incref()
                tokens = estimate_tokens(ticket_text_bytes(message.value), max_tokens=max_record_tokens)
                # Faust's own TP type: its fetch loop asserts on any other (aiokafka's TopicPartition too).
                tp = TP(message.topic, message.partition)
                was_paused = bool(planner.paused)
                stamp = message.timestamp  # seconds (Kafka's record timestamp), or None
                pause = planner.add(event, tokens, tp, time.time(), since=stamp or None)
                for partition in pause:
                    # Faust's own back-pressure call (its queues make it when they fill): the partition leaves
                    # the fetch, and records already fetched still come. ``pause_partitions`` would instead
                    # skip the rest of a fetch in progress, records the consumer has already moved past.
                    app.consumer.on_buffer_full(partition)
                if pause and not was_paused:
                    log.info(
                        "fetching paused: inference behind",
                        partitions=sorted(map(str, pause)),
                        buffered=len(planner),
                        buffered_tokens=planner.buffered_tokens,
                        pause_above=int(planner.pause_above),
                        resume_below=int(planner.resume_below),
                    )
                arrived.set()
        except asyncio.CancelledError:
            if runner.done() and not runner.cancelled() and (error := runner.exception()) is not None:
                raise error from None
            raise
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
