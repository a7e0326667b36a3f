"""The bridge: ``llm.escalations.v1`` -> large model -> ``llm.responses.v1`` (or the dead-letter topic).

Why a plain aiokafka consumer group and not a Faust agent like the triage worker: the work here is a
slow, failure-prone HTTP call per record (seconds each, tens per second at most), not a model pass over
a batch. What matters is having many records in flight at once, letting them finish out of order, and
committing an offset only when every record before it is answered; a Faust agent handles a partition's
events in order and acknowledges them as it moves on, and brings a web server and tables this process
has no use for. Here the consumer fetches while fewer than ``max_in_flight`` records are open, one task
per record calls the endpoint (the client bounds concurrency and rate), and the committed position of a
partition is its lowest unfinished offset. When the endpoint is down, records wait (the circuit breaker
paces the probes), fetching pauses, and nothing is committed past them: whether the endpoint or the
bridge dies, an unanswered escalation is read again. Delivery is therefore at least once; answers carry
the escalation's id and source for consumers to drop duplicates, and keep its key (the id when it has none).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from streamer.bridge.answers import InvalidAnswer, parse_answer
from streamer.bridge.llm import (
    CircuitOpen,
    ClientOptions,
    Completion,
    LLMClient,
    LLMRejected,
    LLMUnavailable,
    MalformedCompletion,
    safe_url,
)
from streamer.bridge.metrics import BridgeMetrics
from streamer.bridge.prompt import LabelSet, Prompt, PromptTemplate, load_prompt, render, unredacted_pii
from streamer.bridge.records import (
    Escalation,
    answer_output,
    dead_letter_output,
    decode_escalation,
    failure_for,
    invalid_answer_failure,
    pii_failure,
    response_record,
)
from streamer.bridge.schema import answer_schema
from streamer.errors import ConfigError
from streamer.events import DecodeFailure, Output, RawEvent, Source
from streamer.headers import SOURCE_BRIDGE, Contracts, TraceParent, event_id, incoming_trace, subject_of, trace_headers
from streamer.kafka import clients
from streamer.kafka.sender import Sender
from streamer.settings import Settings
from streamer.topics import DEADLETTER, ESCALATIONS, LLM_RESPONSES, SchemaRegistry, load_catalog, topic_contracts
from streamer.tracing import InputTrace, Tracing, configure_tracing

log = structlog.get_logger(__name__)


def utc_now_iso(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OffsetTracker:
    """Offsets read and not yet finished, per partition; what may be committed is the lowest unfinished one.

    Records finish out of order; committing past an unfinished one would lose it if the process died.
    """

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        self._open.get(tp, set()).discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit: everything below it is finished."""
        return {tp: min(self._open[tp]) if self._open.get(tp) else nxt for tp, nxt in self._next.items()}

    def open_in(self, tp: TopicPartition) -> int:
        return len(self._open.get(tp, ()))

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._open.values())


class _Abandoned(Exception):
    """A record given up because the bridge is stopping or lost its partition; it will be read again."""


class Bridge:
    """One bridge process; ``run()`` until ``stop()``.

    Everything it talks to can be passed in (tests use a fake endpoint); by default it builds them from
    settings: the endpoint client from ``STREAMER_LLM_*``, the label set from the bundle's manifest.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: LLMClient | None = None,
        template: PromptTemplate | None = None,
        labels: LabelSet | None = None,
        sender: Sender | None = None,
        clock: Callable[[], float] = time.time,
        metrics: BridgeMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic(ESCALATIONS)
        self.template = template or load_prompt()
        self.labels = labels or LabelSet.from_bundle(settings.bundle_dir)
        catalog = load_catalog(settings.topics_file)
        registry = SchemaRegistry(settings.schemas_dir)
        self.validator = registry.validator(catalog[ESCALATIONS].schema or "escalation.v1.json")
        #: Output headers: answers name the large model, dead letters no model.
        self.contracts = Contracts(topic_contracts(catalog, registry), SOURCE_BRIDGE)
        self._answer_contracts: dict[str, Contracts] = {}
        #: Spans (``OTEL_EXPORTER_OTLP_ENDPOINT``); the trace context is carried over either way.
        self.tracing = tracing or configure_tracing("streamer-bridge")
        self.tracing.topic_prefix = settings.topic_prefix
        self.tracing.consumer_group = settings.bridge_group_id
        self.client = client or LLMClient(ClientOptions.from_settings(settings), metrics=metrics)
        self.metrics = self.client.metrics
        self.sender = sender or Sender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix)
        self.clock = clock
        #: Records read and not finished, at most; beyond it fetching pauses (back-pressure).
        self.max_in_flight = max(4 * settings.llm_max_concurrency, 16)
        #: How often finished offsets are committed.
        self.commit_interval_s = 0.5
        #: Rounds of exhausted retries after which a record that fails while others succeed is dead-lettered.
        self.poison_rounds = 3
        self.stats: Counter[str] = Counter()
        self._tracker = OffsetTracker()
        self._tasks: dict[tuple[TopicPartition, int], asyncio.Task[None]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()  # binds to a loop on first use, so it may be made here
        self._failure: BaseException | None = None
        #: Records still unanswered when the shutdown grace period ended (read again on the next start).
        self.abandoned = 0

    # --- lifecycle ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to finish: no new fetches, open records get the shutdown grace period."""
        self._stopping.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Consume until ``stop()``; ``ready`` is set once the consumer has joined its group."""
        settings = self.settings
        consumer = await clients.started(
            settings,
            clients.consumer(
                settings,
                group_id=settings.bridge_group_id,
                auto_offset_reset="earliest",
                max_poll_records=self.max_in_flight,
            ),
        )
        try:
            await self._check_topics(consumer)
            consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
            await self.client.start()
            log.info(
                "bridge started",
                topic=self.topic,
                group=settings.bridge_group_id,
                endpoint=safe_url(self.client.options.base_url),
                model=self.client.options.model,
                prompt=self.template.version,
            )
            await self._loop(consumer, ready)
        finally:
            await self._shutdown(consumer)
        if self._failure is not None:
            raise self._failure

    async def _check_topics(self, consumer: AIOKafkaConsumer, attempts: int = 10) -> None:
        """Fail at start-up, not on the first send, when a topic is missing; a topic created a moment ago
        can take a few metadata refreshes to show, so absence is only believed after ``attempts`` tries."""
        for attempt in range(attempts):
            try:
                for name in (ESCALATIONS, LLM_RESPONSES, DEADLETTER):
                    await clients.topic_partitions(consumer, self.settings.topic(name))
                return
            except ConfigError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5)

    async def _loop(self, consumer: AIOKafkaConsumer, ready: asyncio.Event | None) -> None:
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            room = self.max_in_flight - len(self._tracker)
            if room <= 0:
                consumer.pause(*consumer.assignment())  # again each time: a rebalance may add partitions
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            # Fetching goes on while paused (it returns nothing) so the group does not think we died.
            batches = await consumer.getmany(timeout_ms=200, max_records=max(room, 1))
            if ready is not None and consumer.assignment():
                ready.set()
            for tp, messages in batches.items():
                for message in messages:
                    self._dispatch(tp, message)
            if time.monotonic() - last_commit >= self.commit_interval_s:
                await self._commit(consumer)
                last_commit = time.monotonic()

    async def _shutdown(self, consumer: AIOKafkaConsumer) -> None:
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            log.info("bridge stopping; waiting for open records", open=len(tasks))
            await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s)
        # Offsets still open: records given up (waiting out an outage) or not answered in time.
        self.abandoned = len(self._tracker)
        if self.abandoned:
            log.error(
                "bridge stopping with escalations unanswered; they will be read again",
                abandoned=self.abandoned,
                timeout_s=self.settings.shutdown_timeout_s,
            )
        try:
            await self._commit(consumer)
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks.values()), timeout=5)
            await consumer.stop()
            await self.sender.close()
            await self.client.close()
            self.tracing.shutdown()
            log.info("bridge stopped", **dict(self.stats))

    # --- records ------------------------------------------------------------------------------------

    def _dispatch(self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes]) -> None:
        offset = message.offset
        self._tracker.add(tp, offset)
        raw = RawEvent(
            value=message.value,
            key=message.key,
            source=Source(tp.topic, tp.partition, offset, message.timestamp),
            headers=tuple(message.headers or ()),
        )
        task = asyncio.create_task(self._handle(raw), name=f"escalation {tp.topic}[{tp.partition}]@{offset}")
        self._tasks[(tp, offset)] = task
        self.metrics.in_flight.set(len(self._tasks))
        task.add_done_callback(lambda t: self._finished(tp, offset, t))

    def _finished(self, tp: TopicPartition, offset: int, task: asyncio.Task[None]) -> None:
        self._tasks.pop((tp, offset), None)
        self.metrics.in_flight.set(len(self._tasks))
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._tracker.finish(tp, offset)
        elif not isinstance(exc, _Abandoned):
            # _handle dead-letters every failure it knows; reaching here is a bug. Stop rather than stall
            # the partition forever; the record is read again after the restart.
            log.error("unexpected failure handling an escalation; stopping", offset=offset, error=repr(exc))
            self._failure = exc
            self.stop()

    async def _handle(self, raw: RawEvent) -> None:
        started = time.monotonic()
        src = raw.source
        trace = self.tracing.receive(
            incoming_trace(raw.headers), src.topic, partition=src.partition, offset=src.offset, key=raw.key
        )
        spans: list[Any] = [trace.span] if trace.span is not None else []
        try:
            outputs, outcome = await self.process(raw, trace, spans)
            await self.sender.send(outputs)
        except BaseException as exc:
            self.tracing.end(spans, error=exc)
            raise
        self.tracing.end(spans)
        self.stats[outcome] += 1
        self.metrics.records.labels(outcome=outcome).inc()
        self.metrics.answer_seconds.observe(time.monotonic() - started)

    async def process(
        self, raw: RawEvent, trace: InputTrace | None = None, spans: list[Any] | None = None
    ) -> tuple[list[Output], str]:
        """The records to write for one escalation (with their headers) and the outcome's name.

        Waits out endpoint outages. ``trace``: the escalation's (default: from its ``traceparent`` header or
        a new trace); ``spans``: where the ``send`` spans go until their records are acknowledged.
        """
        trace = trace or InputTrace(incoming_trace(raw.headers) or TraceParent.new())
        outputs, outcome = await self._process(raw, trace)
        return self._headed(raw, outputs, trace, spans if spans is not None else []), outcome

    def _headed(self, raw: RawEvent, outputs: Sequence[Output], trace: InputTrace, spans: list[Any]) -> list[Output]:
        """Headers for the bridge's records; ``ce_subject`` is the escalation's ticket or template id."""
        try:
            escalation = orjson.loads(raw.value or b"")
            subject = subject_of(escalation) if isinstance(escalation, dict) else None
        except orjson.JSONDecodeError:
            subject = None
        now = utc_now_iso(self.clock)
        headed = []
        for out in outputs:
            contracts = self.contracts
            model = out.value.get("model") if out.topic == LLM_RESPONSES else None
            if isinstance(model, str) and model:
                contracts = self._answer_contracts.get(model) or self._answer_contracts.setdefault(
                    model, self.contracts.with_model(model, None)
                )
            context = self.tracing.send(trace, out.topic, spans, key=out.key, message_id=out.value.get("id"))
            headers = contracts.headers(
                out.topic,
                event_id=event_id(out.topic, out.value.get("source"), out.value.get("id")),
                time=now,
                trace=context,
                subject=subject,
            )
            headed.append(Output(out.topic, out.key, out.value, out.headers + headers))
        return headed

    async def _process(self, raw: RawEvent, trace: InputTrace) -> tuple[list[Output], str]:
        decoded = decode_escalation(raw, self.validator, self.settings.max_event_bytes)
        if isinstance(decoded, DecodeFailure):
            log.warning("undecodable escalation", code=decoded.code, error=decoded.message, offset=raw.source.offset)
            return [dead_letter_output(decoded, utc_now_iso(self.clock))], "undecodable"
        escalation = decoded
        prompt = render(self.template, escalation.doc, self.labels)
        findings = unredacted_pii(escalation.doc, prompt)
        if findings:
            log.warning(
                "escalation refused: personal data in the text to send",
                id=escalation.id,
                fields=[f.field for f in findings],
                kinds=sorted({k for f in findings for k in f.kinds}),
            )
            return [dead_letter_output(pii_failure(escalation, findings), utc_now_iso(self.clock))], "unredacted_pii"
        started = self.clock()
        result = await self._complete(escalation, prompt, trace)
        if isinstance(result, DecodeFailure):
            return [dead_letter_output(result, utc_now_iso(self.clock))], result.code
        answer = parse_answer(result.content, prompt.labels, prompt.priorities)
        if isinstance(answer, InvalidAnswer):
            log.warning("invalid answer", id=escalation.id, error=answer.message)
            failure = invalid_answer_failure(escalation, result.content, answer.message, answer.field)
            return [dead_letter_output(failure, utc_now_iso(self.clock))], "invalid_answer"
        now = self.clock()
        record = response_record(
            escalation,
            answer,
            result,
            prompt_version=prompt.version,
            answered_at=utc_now_iso(lambda: now),
            latency_ms=(now - started) * 1000,
        )
        return [answer_output(escalation, record)], "answered"

    async def _complete(
        self, escalation: Escalation, prompt: Prompt, trace: InputTrace | None = None
    ) -> Completion | DecodeFailure:
        """The endpoint's answer, trying until it comes: outages are waited out, never turned into loss.

        Two exceptions end the wait with a dead letter: the endpoint refusing this very request (4xx),
        and a request that keeps failing while others succeed (a poison record must not hold its
        partition's commits forever).
        """
        strikes = 0
        sent = 0  # requests of earlier rounds, so the answer reports every request it cost
        while True:
            successes_before = self.client.successes
            asked = self.client.structured  # read where complete() builds its request, with no await between
            try:
                completion = await self._call(
                    escalation, prompt, trace, schema=answer_schema(prompt.labels, prompt.priorities)
                )
                return replace(completion, attempts=sent + completion.attempts)
            except LLMRejected as exc:
                if self.client.refuses_structured(exc, asked):
                    sent += 1
                    continue
                return failure_for(escalation, "processing_failed", f"the endpoint refused the request: {exc}")
            except MalformedCompletion as exc:
                return invalid_answer_failure(escalation, exc.body, str(exc), None)
            except LLMUnavailable as exc:
                sent += exc.attempts
                wait = max(exc.retry_after_s, 0.05)
                if (
                    not isinstance(exc, CircuitOpen)
                    and exc.last_outcome != "rate_limited"
                    and self.client.successes > successes_before
                ):
                    strikes += 1
                    if strikes >= self.poison_rounds:
                        return failure_for(
                            escalation,
                            "processing_failed",
                            f"failed {strikes} rounds of retries while other requests succeeded: {exc}",
                        )
                log.debug(
                    "endpoint unavailable; escalation waits", id=escalation.id, wait_s=round(wait, 2), error=str(exc)
                )
                await self._wait(wait)

    async def _call(
        self, escalation: Escalation, prompt: Prompt, trace: InputTrace | None, *, schema: dict[str, Any] | None
    ) -> Completion:
        """One ``complete`` call in a ``chat`` span; the endpoint gets the trace context as HTTP headers."""
        if trace is None:
            return await self.client.complete(prompt.messages, request_id=escalation.id, schema=schema)
        options = self.client.options
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": options.model}
        with self.tracing.span(f"chat {options.model}", trace, attributes, client=True) as span:
            headers = trace_headers(self.tracing.current(span, trace.trace))
            return await self.client.complete(prompt.messages, request_id=escalation.id, headers=headers, schema=schema)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise _Abandoned("bridge stopping")

    # --- offsets ------------------------------------------------------------------------------------

    async def _commit(self, consumer: AIOKafkaConsumer, only: Sequence[TopicPartition] | None = None) -> None:
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._tracker.committable().items()
            if tp in assigned and (only is None or tp in only) and self._committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("commit failed; those records will be read again", error=repr(exc))
            return
        self._committed.update(offsets)

    async def partitions_revoked(self, consumer: AIOKafkaConsumer, revoked: Sequence[TopicPartition]) -> None:
        """Before giving partitions up: let their open records finish (within the grace period), commit."""
        lost = set(revoked)
        tasks = [task for (tp, _), task in self._tasks.items() if tp in lost]
        if tasks:
            log.info("partitions revoked; finishing their open records", partitions=len(lost), open=len(tasks))
            await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s)
        await self._commit(consumer, only=list(lost))
        for (tp, _), task in list(self._tasks.items()):
            if tp in lost:
                task.cancel()
        self._tracker.forget(lost)
        for tp in lost:
            self._committed.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge, consumer: AIOKafkaConsumer) -> None:
        self._bridge = bridge
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._bridge.partitions_revoked(self._consumer, revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))
