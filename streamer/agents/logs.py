"""The log service: ``ops.logs.v1`` in large batches through a raw aiokafka consumer inside the worker process.

Why not a Faust agent, as for tickets: a Faust agent tops out at about 4,500 events/s per process
consume-only on this box (``DESIGN.md``), some 200 us per event before our code runs, while a raw
consumer's ``getmany`` hands over 160,000+ records/s. Tickets are model-bound at hundreds per second, so
Faust's ceiling is far away; logs arrive by the tens of thousands per second, and 20,000 lines/s leaves
50 us per line for everything. So ``LogService`` is a ``mode.Service`` started by the same worker as the Faust app,
owning its own ``AIOKafkaConsumer`` in its own group (``<group_id>-logs``): ticket and log partitions are
assigned independently, and a worker can run either path alone.

Measured with ``bench/bench_log_worker.py`` on the development box (2 cores shared with other work, load
average 4-6, the broker on the same box), 200,000 lines of the demo mix pre-filled:

* ``streamer worker --only logs``: 6,300-8,700 lines/s from the first to the last output (three runs), at
  105-109 us of worker CPU per line while the process got 0.68-0.88 of a core: about 9,500 lines/s on a
  core of its own. Two worker processes in the group did no better (6,200 lines/s, 0.70 cores between
  them): the box, not the process, was full;
* the same service with the triage core replaced by a stub (one line-sized output per line): 67,000
  lines/s at 7 us of CPU per line, so fetching, producing and committing are not what limits;
* the core alone, without Kafka: 105-111 us of CPU per line (9,100 lines/s when it had a core to itself);
  under cProfile, PII redaction is half of ``triage_logs``, then decoding, entity extraction and template
  mining. The incident model ran on 48 templates in 4 calls for 200,000 lines.

So one process is bound by the pure-Python core, well below 20,000 lines/s here; more throughput is more
processes (one per partition at most: ``ops.logs.v1`` has 6) or a cheaper core. The core runs in a thread
of its own: it holds the GIL either way (CPU per line measured the same inline and threaded, and inline
was not slower: 6,000 and 8,400 against 5,400 and 5,700 lines/s in two pairs of runs on the noisy box), but
a 2,000-line batch is a few hundred milliseconds of work, which inline would take from the ticket agent,
heartbeats and ``/health`` on the same loop.

Per batch (one ``getmany`` of up to ``max_batch`` records):

1. records become ``RawEvent``s on the loop;
2. ``streamer.pipeline.logs.LogProcessor`` decodes, triages and encodes them in one dedicated thread into a
   ``streamer.pipeline.Batch`` whose outputs already name their topic and key;
3. all outputs of the batch are produced together (``streamer.kafka.sender``), and only once the brokers
   have acknowledged every one are the batch's offsets (``Batch.offsets``) committed: at-least-once, as on
   the ticket path. While batch N is acknowledged, batch N+1 is triaged; at most one batch waits for acks.

Rebalances: on revoke, the listener waits until every batch already taken is triaged, delivered and
committed; a fetch that returns while a rebalance is under way is put back (the consumer seeks to its first
record where it still owns the partition; elsewhere the next owner reads it from the committed offset). On
assignment, templates published since the last read (by any worker) are loaded before the new partitions
are consumed (``streamer.kafka.templates``). Burst baselines stay with the worker that counted them: a
service that moves to another worker starts its baseline again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service

from streamer.events import RawEvent, Source
from streamer.kafka.sender import Sender
from streamer.pipeline.batch import Batch
from streamer.pipeline.logs import LogProcessor
from streamer.topics import LOGS

__all__ = ["LogService", "TemplateSource"]

log = structlog.get_logger(__name__)

#: Next offset to commit per ``(topic, partition)`` (keys are aiokafka ``TopicPartition``s, which are such tuples).
Offsets = dict[tuple[str, int], int]


class TemplateSource(Protocol):
    """Where published templates come from (``streamer.kafka.templates.TemplateStore``)."""

    async def start(self) -> None: ...

    async def catch_up(self) -> list[dict[str, Any]]: ...

    async def stop(self) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: LogService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._service._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._service._on_assigned(set(assigned))


class LogService(Service):  # type: ignore[misc]
    """Consumes ``ops.logs.v1`` in batches and runs log triage (see the module docstring).

    Args:
        processor: decode + triage + encode; owns the triage state.
        sender: produces a batch's outputs and waits for the acknowledgements.
        make_consumer: the group consumer (``streamer.kafka.templates.log_consumer``); created in ``on_start``,
            inside the worker's loop.
        store: published templates, loaded at start before any log is consumed and again on assignment.
        topic: the logs topic as named on the cluster (prefix included; default ``ops.logs.v1``).
        executor: the one thread that runs the processor (``None``: run it on the event loop).
        max_batch: most records per batch (default 2000).
        max_wait_s: longest wait for records before an empty poll (default 0.05).
        on_batch: called with each ``Batch`` once its outputs are acknowledged and its offsets committed.
        on_assignment: called with the partitions this service owns after every change.
    """

    #: mode's lifecycle lines go where Faust's and mode's go (warnings only by default).
    logger = logging.getLogger("mode.streamer.logs")

    def __init__(
        self,
        *,
        processor: LogProcessor,
        sender: Sender,
        make_consumer: Callable[[], AIOKafkaConsumer],
        store: TemplateSource,
        topic: str = LOGS,
        executor: ThreadPoolExecutor | None,
        max_batch: int = 2000,
        max_wait_s: float = 0.05,
        on_batch: Callable[[Batch], None] | None = None,
        on_assignment: Callable[[set[tuple[str, int]]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.processor = processor
        self.sender = sender
        self.store = store
        self.topic = topic
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.on_assignment = on_assignment
        self.assigned: set[TopicPartition] = set()
        self._make_consumer = make_consumer
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._busy = 0
        self._idle: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._generation = 0
        self._stopping = False
        self._held_offsets: Offsets = {}

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _load_templates(self) -> int:
        records = await self.store.catch_up()
        if records:
            await self._in_thread(self.processor.state.load_templates, records)
        return len(records)

    async def on_start(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()
        self._ready = asyncio.Event()
        await self.store.start()
        loaded = await self._load_templates()
        consumer = self._make_consumer()
        await consumer.start()
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._run())
        log.info(
            "log path started",
            topic=self.topic,
            group=getattr(consumer, "_group_id", None),
            templates_loaded=loaded,
            templates=len(self.processor.state.miner),
        )

    async def on_stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("log loop ended with an error", error=repr(exc))
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        await self.store.stop()
        await self.sender.close()

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("log path failed")
            await self.crash(exc)
        finally:
            if self._delivery is not None:
                await asyncio.shield(self._delivery)
            if self._held_offsets and self._consumer is not None:
                try:
                    await self._flush_held()
                except Exception as exc:  # their offsets stay uncommitted: the next owner reads them again
                    log.warning("held log records not delivered at stop", error=repr(exc))

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None and self._idle is not None and self._ready is not None
        timeout_ms = max(int(self.max_wait_s * 1000), 1)
        backoff = 0.5
        while not self._stopping:
            if not self._ready.is_set():  # between a revoke and the end of the next assignment's set-up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), 0.1)
                continue
            generation = self._generation
            try:
                fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_batch)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                log.warning("fetching logs failed; retrying", error=repr(exc), delay_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            if not fetched:
                if self._held_offsets:
                    await self._flush_held()
                continue
            if generation != self._generation:
                self._rewind(consumer, fetched)  # a rebalance began during the fetch
                continue
            raws: list[RawEvent] = []
            offsets: Offsets = {}
            for tp, messages in fetched.items():
                topic, partition = tp.topic, tp.partition
                raws.extend(
                    RawEvent(m.value, Source(topic, partition, m.offset, m.timestamp), m.key, tuple(m.headers or ()))
                    for m in messages
                )
                offsets[tp] = messages[-1].offset + 1
            self._busy += 1
            self._idle.clear()
            try:
                batch: Batch = await self._in_thread(self.processor, raws)
            except BaseException:
                self._release()
                raise
            if self.processor.hold:  # this batch's enriched records wait for the next one: so do its offsets
                batch.offsets, self._held_offsets = self._held_offsets, offsets
            else:
                batch.offsets = offsets
            if self._delivery is not None:
                await self._delivery
            self._delivery = asyncio.ensure_future(self._deliver(batch))

    async def _flush_held(self) -> None:
        """Send the enriched records held back from the last batch and commit its offsets."""
        offsets, self._held_offsets = self._held_offsets, {}
        if not offsets:
            return
        assert self._idle is not None
        self._busy += 1
        self._idle.clear()
        try:
            batch: Batch = await self._in_thread(self.processor.flush)
        except BaseException:
            self._release()
            raise
        batch.offsets = offsets
        if self._delivery is not None:
            await self._delivery
        self._delivery = asyncio.ensure_future(self._deliver(batch))
        await self._delivery

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Put back records fetched across a rebalance: partitions still owned are read again from them."""
        owned = consumer.assignment()
        for tp, messages in fetched.items():
            if messages and tp in owned:
                consumer.seek(tp, messages[0].offset)

    def _release(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._idle is not None:
            self._idle.set()

    async def _deliver(self, batch: Batch) -> None:
        try:
            started = time.perf_counter()
            await self.sender.send(batch.outputs)
            sent = time.perf_counter()
            await self._commit(batch.offsets)
            if self.on_batch is not None:
                self.on_batch(batch)
            log.debug(
                "log batch done",
                size=batch.size,
                outputs=len(batch.outputs),
                offsets={f"{topic}:{partition}": o for (topic, partition), o in batch.offsets.items()},
                decode_ms=round(batch.decode_s * 1000, 1),
                triage_ms=round(batch.inference_s * 1000, 1),
                encode_ms=round(batch.encode_s * 1000, 1),
                send_ms=round((sent - started) * 1000, 1),
                classified=batch.classified,
            )
        finally:
            self._release()

    async def _commit(self, offsets: Offsets) -> None:
        consumer = self._consumer
        assert consumer is not None
        owned = consumer.assignment()
        mine = {TopicPartition(*tp): offset for tp, offset in offsets.items() if tp in owned}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: the new owner reads these records again (at-least-once).
            log.warning("log offsets not committed after a rebalance", error=repr(exc))
        except KafkaError as exc:
            log.warning("committing log offsets failed; a later batch commits past them", error=repr(exc))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        if self._ready is not None:
            self._ready.clear()
        in_flight, started = self._busy, time.perf_counter()
        if self._idle is not None:
            await self._idle.wait()  # every batch taken so far: triaged, delivered, committed
            await self._flush_held()  # and the records held back from the last one
        self.assigned -= revoked
        if self.on_assignment is not None:
            self.on_assignment({(tp.topic, tp.partition) for tp in self.assigned})
        if revoked:
            log.info(
                "log partitions revoked",
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                batches_drained=in_flight,
                drain_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            loaded = await self._load_templates()
        except Exception as exc:  # the partitions are served anyway: ids are content hashes and still agree
            loaded = 0
            log.warning("templates published by other workers not loaded", error=repr(exc))
        self.assigned = set(assigned)
        if self._ready is not None:
            self._ready.set()
        if self.on_assignment is not None:
            self.on_assignment({(tp.topic, tp.partition) for tp in self.assigned})
        log.info(
            "log partitions assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            templates_loaded=loaded,
        )
