"""The log path: ``ops.logs.v1`` in large batches through a raw aiokafka consumer inside the worker process.

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
2. decode, ``triage_logs`` and JSON encoding run in one dedicated thread (the triage state is not
   thread-safe); the incident model only sees templates it has not classified before;
3. all outputs of the batch are produced together with the producer's batch API, and only once the
   brokers have acknowledged every one are the batch's offsets committed: at-least-once, as on the ticket
   path. While batch N is acknowledged, batch N+1 is triaged; at most one batch waits for acks.

Outputs (keys): ``ops.logs.enriched.v1`` one per line and ``ops.alerts.v1`` (service),
``llm.escalations.v1`` (input id, as for tickets, so the large model's answer joins back),
``ops.log_templates.v1`` new and changed templates (template id, compacted), ``streamer.deadletter.v1``
undecodable lines with the reason (the input key).

Rebalances: on revoke, the listener waits until every batch already taken is triaged, delivered and
committed; a fetch that returns while a rebalance is under way is put back (the consumer seeks to its first
record where it still owns the partition; elsewhere the next owner reads it from the committed offset). On
assignment, templates published since the last read (by any worker) are loaded before the new partitions
are consumed. Burst baselines stay with the worker that counted them: a service that moves to another
worker starts its baseline again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2
from mode import Service

from streamer.agents.output import log_dead_letter
from streamer.events import DecodeFailure, DecodeLimits, RawEvent, Source, encode
from streamer.headers import SOURCE_LOGS, Contracts, Headers, TraceParent, event_id, incoming_trace, subject_of
from streamer.logs.decode import Layouts, decode_logs, format_time_ms
from streamer.logs.routes import destinations
from streamer.logs.triage import IncidentClassifier, LogBatchResult, LogTriageState, resolve_enriched, triage_logs
from streamer.privacy import Privacy
from streamer.topics import ALERTS, DEADLETTER, ESCALATIONS, LOG_TEMPLATES, LOGS, LOGS_ENRICHED, load_contracts
from streamer.tracing import InputTrace, Tracing
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import Router

__all__ = ["BatchSender", "LogBatch", "LogProcessor", "LogService", "TemplateSource"]

log = structlog.get_logger(__name__)

#: Encoded outputs of a batch: declared topic -> ``(key, value, headers)`` in input order.
Records = dict[str, list[tuple[bytes | None, bytes, Headers]]]


@dataclass
class LogBatch:
    """One batch's encoded outputs and what happened to its lines (for metrics, logs and benchmarks).

    ``offsets``: the next offset to commit per partition (set by the service); ``classified``: templates
    the incident model saw in this batch; ``*_s``: seconds spent decoding, triaging and encoding.
    """

    records: Records = field(default_factory=dict)
    size: int = 0
    processed: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    escalations: Counter[str] = field(default_factory=Counter)
    #: Records sent to each team topic by the logs rules of ``routes.yaml``.
    routes: Counter[str] = field(default_factory=Counter)
    templates: int = 0
    classified: int = 0
    decode_s: float = 0.0
    triage_s: float = 0.0
    encode_s: float = 0.0
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def outputs(self) -> int:
        return sum(len(records) for records in self.records.values())


class _Counting:
    """Counts the templates a batch hands to the model (in a ``model`` span when tracing is on)."""

    def __init__(
        self, inner: IncidentClassifier, tracing: Tracing | None = None, parent: Any = None, model: Any = None
    ) -> None:
        self.inner = inner
        self.templates = 0
        self.tracing = tracing
        self.parent = parent
        self.model = model

    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        self.templates += len(templates)
        if self.tracing is None or self.parent is None:
            return self.inner.classify_templates(templates)
        with self.tracing.span("model", self.parent, self.model, batch=len(templates)):
            return self.inner.classify_templates(templates)


@dataclass
class LogProcessor:
    """Decode + triage + encode one batch of raw log records; runs in the log thread, owns ``state``."""

    state: LogTriageState
    classifier: IncidentClassifier
    model_info: ModelInfo
    limits: DecodeLimits
    clock: Callable[[], float] = time.time
    #: Output headers (``streamer.headers``); default: from the ``topics/`` of the checkout.
    contracts: Contracts | None = None
    #: Spans (``streamer.tracing``): one batch span linked to the lines and the model's; no per-line spans.
    tracing: Tracing = field(default_factory=Tracing)
    #: Applied to every record just before it is encoded (default: everything masked, raw dead letters).
    privacy: Privacy = field(default_factory=Privacy)
    #: Per-service text layouts (``STREAMER_LOG_LAYOUTS``), compiled.
    layouts: Layouts = field(default_factory=dict)
    #: Hold each batch's enriched records until the next batch is mined (``STREAMER_LOG_HOLD_BATCH``).
    hold: bool = False
    #: The ``logs`` rules of ``routes.yaml``: each enriched record also leaves on the team topics they name.
    router: Router | None = None
    _keys: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _traces: dict[tuple[str, int, int], TraceParent] = field(default_factory=dict, init=False, repr=False)
    _held: list[tuple[dict[str, Any], Any, TraceParent, str]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.contracts is None:
            from streamer.settings import load_settings

            model = (self.model_info.name, self.model_info.version)
            self.contracts = load_contracts(load_settings().topics_dir, SOURCE_LOGS, model)

    def flush(self) -> LogBatch:
        """The enriched records held back from the last batch, resolved to the current templates."""
        batch = LogBatch()
        out: Records = {}
        self._release_held(out, batch)
        batch.records = {topic: recs for topic, recs in out.items() if recs}
        batch.processed = len(out.get(LOGS_ENRICHED, ()))
        return batch

    def _release_held(self, out: Records, batch: LogBatch) -> None:
        """Held records, resolved (and routed) now, with the trace and time they were triaged under."""
        held, self._held = self._held, []
        resolve_enriched([record for record, _, _, _ in held], self.state, self.router)
        for record, values, trace, now in held:
            self._leave(out, batch, record, values, trace, now)

    def _leave(
        self, out: Records, batch: LogBatch, record: dict[str, Any], values: Any, trace: TraceParent, now: str
    ) -> None:
        """One enriched record on ``ops.logs.enriched.v1`` and on each team topic of its ``routes``, each copy
        rendered by its topic's privacy policy, with its headers."""
        contracts = self.contracts
        assert contracts is not None
        key = self._key(record["service"])
        plain: bytes | None = None
        for topic in destinations(record):
            headers = contracts.headers(
                topic,
                event_id=event_id(topic, record["source"], None),
                time=now,
                trace=trace,
                subject=subject_of(record),
                confidence=self._confidence(record["template_id"]),
            )
            value = self.privacy.log_record(record, values, topic) if values else record
            if value is record:
                data = plain = plain if plain is not None else encode(record)
            else:
                data = encode(value)
            out.setdefault(topic, []).append((key, data, headers))
            if topic != LOGS_ENRICHED:
                batch.routes[topic] += 1

    def __call__(self, raws: Sequence[RawEvent]) -> LogBatch:
        # Lines keep the trace they came with; the others each start one (no span: see streamer.tracing).
        self._traces = {
            (src.topic, src.partition, src.offset): found
            for r in raws
            if (found := incoming_trace(r.headers)) is not None
            for src in (r.source,)
        }
        if not self.tracing.enabled:
            return self._process(raws, None)
        inputs = [InputTrace(self._trace_of(r.source.to_dict())) for r in raws]
        with self.tracing.batch(inputs, size=len(raws)) as batch_span:
            return self._process(raws, batch_span)

    def _trace_of(self, source: Mapping[str, Any] | None) -> TraceParent:
        if source is None:
            return TraceParent.new()
        key = (source["topic"], source["partition"], source["offset"])
        found = self._traces.get(key)
        if found is None:
            found = self._traces[key] = TraceParent.new()
        return found

    def _process(self, raws: Sequence[RawEvent], batch_span: Any) -> LogBatch:
        batch = LogBatch(size=len(raws))
        started = time.perf_counter()
        records, failures = decode_logs(raws, self.limits, self.layouts)
        decoded = time.perf_counter()
        now = format_time_ms(int(self.clock() * 1000))
        counting = _Counting(self.classifier, self.tracing, batch_span, self.model_info.to_dict())
        try:
            results = [triage_logs(records, self.state, counting, model=self.model_info, now=now, router=self.router)]
        except Exception:
            # One poison line must not sink its batch: retry line by line, dead-letter what still fails.
            log.exception("log batch triage failed; retrying line by line", batch=len(records))
            results = []
            raw_of = {raw.source: raw for raw in raws}
            for record in records:
                try:
                    results.append(
                        triage_logs([record], self.state, counting, model=self.model_info, now=now, router=self.router)
                    )
                except Exception as exc:
                    raw = raw_of.get(record.source) or RawEvent(None, record.source, record.key)
                    failures.append(
                        DecodeFailure(raw, "processing_failed", f"{type(exc).__name__}: {exc}"[:500], id=record.id)
                    )
        triaged = time.perf_counter()
        out: Records = {LOGS_ENRICHED: [], ALERTS: [], ESCALATIONS: [], LOG_TEMPLATES: [], DEADLETTER: []}
        if self.hold:  # the last batch's enriched records leave now, resolved with this batch's evidence
            self._release_held(out, batch)
        for result in results:
            self._encode(result, out, batch, now)
        for failure in failures:
            dead = self.privacy.dead_letter(failure, now)
            headers = self._headers(DEADLETTER, dead, now, dead["source"], failure.id)
            out[DEADLETTER].append((failure.raw.key, encode(dead), headers))
            batch.dead_letters[failure.code] += 1
            log_dead_letter(failure, "log record dead-lettered")
        batch.records = {topic: recs for topic, recs in out.items() if recs}
        batch.processed = len(out[LOGS_ENRICHED])
        batch.classified = counting.templates
        batch.decode_s, batch.triage_s = decoded - started, triaged - decoded
        batch.encode_s = time.perf_counter() - triaged
        return batch

    def _key(self, service: str) -> bytes:
        key = self._keys.get(service)
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            key = self._keys[service] = service.encode()
        return key

    def _headers(
        self,
        topic: str,
        record: Mapping[str, Any],
        now: str,
        source: Mapping[str, Any] | None,
        record_id: str | None,
        confidence: float | None = None,
    ) -> Headers:
        contracts = self.contracts
        assert contracts is not None
        return contracts.headers(
            topic,
            event_id=event_id(topic, source, record_id),
            time=now,
            trace=self._trace_of(source),
            subject=subject_of(record),
            confidence=confidence,
        )

    def _confidence(self, template_id: Any) -> float | None:
        found = self.state.classes.get(template_id)
        return found[1] if found is not None else None

    def _encode(self, result: LogBatchResult, out: Records, batch: LogBatch, now: str) -> None:
        head = self._headers
        for i, record in enumerate(result.enriched):
            values = result.pii[i] if result.pii else None
            trace = self._trace_of(record["source"])
            if self.hold:
                self._held.append((record, values, trace, now))
            else:
                self._leave(out, batch, record, values, trace, now)
        for alert in result.alerts:
            headers = head(ALERTS, alert, now, None, alert["id"], self._confidence(alert["template_id"]))
            out[ALERTS].append((self._key(alert["service"]), encode(alert), headers))
            batch.alerts[alert["kind"]] += 1
        for escalation in result.escalations:
            confidence = escalation["candidates"][0]["confidence"] if escalation["candidates"] else None
            headers = head(ESCALATIONS, escalation, now, escalation["source"], None, confidence)
            out[ESCALATIONS].append((escalation["id"].encode(), encode(escalation), headers))
            for reason in escalation["reasons"]:
                batch.escalations[reason["code"]] += 1
        for template in result.templates:
            confidence = template.get("incident_confidence")
            headers = head(LOG_TEMPLATES, template, now, None, template["template_id"], confidence)
            out[LOG_TEMPLATES].append((template["template_id"].encode(), encode(template), headers))
        batch.templates += len(result.templates)


class BatchSender:
    """Produces a batch's records with the producer's batch API, then awaits every acknowledgement.

    ``producer.send()`` per record costs a coroutine, a partitioner call and an accumulator lookup per
    record; here records are partitioned like the Java client's default partitioner (murmur2 of the key,
    cached per key) and appended to one batch per partition, which leaves in one request. Records without
    a key go to one partition per batch. A failed batch is resent whole with a fresh producer and backoff,
    forever (like ``OutputSender``): duplicates are allowed, losses are not.
    """

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer], *, topic_prefix: str = "") -> None:
        self._make_producer = make_producer
        self.topic_prefix = topic_prefix
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes], int] = {}
        self._spread = 0
        self.retry_initial_s = 0.5
        self.retry_max_s = 10.0

    async def send(self, records: Mapping[str, Sequence[tuple[bytes | None, bytes, Headers]]]) -> None:
        """Return once the brokers hold every record (acks=all), retrying until they do."""
        if not any(records.values()):
            return
        delay = self.retry_initial_s
        while True:
            try:
                await self._send_once(records)
                return
            except (KafkaError, OSError) as exc:
                count = sum(len(r) for r in records.values())
                log.warning("sending log outputs failed; retrying", error=repr(exc), records=count, delay_s=delay)
                await self._reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        known = sorted(await producer.partitions_for(topic))
        if self._partitions.get(topic) != known:
            self._partitions[topic] = known
            self._by_key = {k: p for k, p in self._by_key.items() if k[0] != topic}
        return known

    def _partition(self, topic: str, key: bytes | None, partitions: list[int]) -> int:
        if key is None:
            return partitions[self._spread % len(partitions)]
        found = self._by_key.get((topic, key))
        if found is None:
            if len(self._by_key) > 100_000:
                self._by_key.clear()
            found = self._by_key[(topic, key)] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return found

    async def _send_once(self, records: Mapping[str, Sequence[tuple[bytes | None, bytes, Headers]]]) -> None:
        producer = await self._producer_started()
        self._spread += 1
        pending: list[asyncio.Future[Any]] = []
        for declared, recs in records.items():
            if not recs:
                continue
            topic = self.topic_prefix + declared
            partitions = await self._partitions_of(producer, topic)
            by_partition: dict[int, list[tuple[bytes | None, bytes, Headers]]] = {}
            for rec in recs:
                by_partition.setdefault(self._partition(topic, rec[0], partitions), []).append(rec)
            for partition, items in by_partition.items():
                batch = producer.create_batch()
                for key, value, headers in items:
                    if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is not None:
                        continue
                    if batch.record_count():
                        pending.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is not None:
                            continue
                    # Larger than a whole batch: let the producer's own checks take it (or refuse it).
                    pending.append(
                        await producer.send(topic, value, key=key, partition=partition, headers=list(headers) or None)
                    )
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except (KafkaError, OSError) as exc:
                log.debug("stopping a failed producer failed too", error=repr(exc))

    async def close(self) -> None:
        await self._reset()


class TemplateSource(Protocol):
    """Where published templates come from (``streamer.logs.runtime.TemplateStore``)."""

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
        make_consumer: the group consumer (``streamer.logs.runtime.log_consumer``); created in ``on_start``,
            inside the worker's loop.
        store: published templates, loaded at start before any log is consumed and again on assignment.
        topic: the logs topic as named on the cluster (prefix included; default ``ops.logs.v1``).
        executor: the one thread that runs the processor (``None``: run it on the event loop).
        max_batch: most records per batch (default 2000).
        max_wait_s: longest wait for records before an empty poll (default 0.05).
        on_batch: called with each ``LogBatch`` once its outputs are acknowledged and its offsets committed.
        on_assignment: called with the partitions this service owns after every change.
    """

    #: mode's lifecycle lines go where Faust's and mode's go (warnings only by default).
    logger = logging.getLogger("mode.streamer.logs")

    def __init__(
        self,
        *,
        processor: LogProcessor,
        sender: BatchSender,
        make_consumer: Callable[[], AIOKafkaConsumer],
        store: TemplateSource,
        topic: str = LOGS,
        executor: ThreadPoolExecutor | None,
        max_batch: int = 2000,
        max_wait_s: float = 0.05,
        on_batch: Callable[[LogBatch], None] | None = None,
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
        self._held_offsets: dict[TopicPartition, int] = {}

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
            offsets: dict[TopicPartition, int] = {}
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
                batch: LogBatch = await self._in_thread(self.processor, raws)
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
            batch: LogBatch = await self._in_thread(self.processor.flush)
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

    async def _deliver(self, batch: LogBatch) -> None:
        try:
            started = time.perf_counter()
            await self.sender.send(batch.records)
            sent = time.perf_counter()
            await self._commit(batch.offsets)
            if self.on_batch is not None:
                self.on_batch(batch)
            log.debug(
                "log batch done",
                size=batch.size,
                outputs=batch.outputs,
                offsets={f"{tp.topic}:{tp.partition}": o for tp, o in batch.offsets.items()},
                decode_ms=round(batch.decode_s * 1000, 1),
                triage_ms=round(batch.triage_s * 1000, 1),
                encode_ms=round(batch.encode_s * 1000, 1),
                send_ms=round((sent - started) * 1000, 1),
                classified=batch.classified,
            )
        finally:
            self._release()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        owned = consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
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
