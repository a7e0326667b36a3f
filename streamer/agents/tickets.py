"""The ticket agent: batches of raw records to triage decisions to output records.

The agent itself only moves bytes: it takes a batch, hands it to ``TicketProcessor`` in the inference
thread (the event loop never runs the model), produces every output of the batch together and waits for
the brokers' acknowledgement before Faust may commit the batch's offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import faust
import structlog
from jsonschema import Draft202012Validator

from streamer.agents.output import OutputSender, log_dead_letter
from streamer.events import (
    DecodeFailure,
    DecodeLimits,
    Output,
    RawEvent,
    Source,
    Ticket,
    dead_letter,
    decode_ticket,
)
from streamer.headers import SOURCE_TICKETS, Contracts, event_id, incoming_trace
from streamer.topics import DEADLETTER, TICKETS, load_contracts
from streamer.tracing import InputTrace, Tracing
from streamer.triage.escalation import EscalationPolicy
from streamer.triage.outputs import ModelInfo, ticket_outputs
from streamer.triage.routing import Router
from streamer.triage.tickets import TicketModel, triage_tickets

log = structlog.get_logger(__name__)


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class BatchResult:
    """The outputs of one batch and what happened to its inputs (for metrics and summaries)."""

    outputs: list[Output] = field(default_factory=list)
    size: int = 0
    processed: int = 0
    events_in: Counter[str] = field(default_factory=Counter)
    source_timestamps_ms: list[int] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    escalations: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    inference_s: float = 0.0
    #: Trace spans to end once the outputs are acknowledged (empty unless tracing is on).
    spans: list[Any] = field(default_factory=list)


@dataclass
class TicketProcessor:
    """Decode + triage + records for one batch; thread-safe as long as the model is."""

    model: TicketModel
    model_info: ModelInfo
    router: Router
    policy: EscalationPolicy
    validator: Draft202012Validator
    limits: DecodeLimits
    clock: Callable[[], float] = time.time
    #: Output headers (``streamer.headers``); default: from the ``topics/`` of the checkout.
    contracts: Contracts | None = None
    #: Spans (``streamer.tracing``); default: off, trace context still carried from input to outputs.
    tracing: Tracing = field(default_factory=Tracing)

    def __post_init__(self) -> None:
        if self.contracts is None:
            from streamer.settings import load_settings

            model = (self.model_info.name, self.model_info.version)
            self.contracts = load_contracts(load_settings().topics_dir, SOURCE_TICKETS, model)

    def __call__(self, raws: Sequence[RawEvent]) -> BatchResult:
        tracing = self.tracing
        traces = [
            tracing.receive(incoming_trace(r.headers), s.topic, partition=s.partition, offset=s.offset, key=r.key)
            for r in raws
            for s in (r.source,)
        ]
        with tracing.batch(traces, size=len(raws)) as batch_span:
            return self._process(raws, traces, batch_span)

    def _process(self, raws: Sequence[RawEvent], traces: Sequence[InputTrace], batch_span: Any) -> BatchResult:
        result = BatchResult(size=len(raws))
        result.spans.extend(t.span for t in traces if t.span is not None)
        tickets: list[Ticket] = []
        raw_of: dict[int, RawEvent] = {}
        trace_of: dict[int, InputTrace] = {}
        for raw, trace in zip(raws, traces, strict=True):
            result.events_in[raw.source.topic] += 1
            if raw.source.timestamp_ms is not None:
                result.source_timestamps_ms.append(raw.source.timestamp_ms)
            decoded = decode_ticket(raw, self.validator, self.limits)
            if isinstance(decoded, DecodeFailure):
                self._dead(result, decoded, trace)
            else:
                raw_of[id(decoded)] = raw
                trace_of[id(decoded)] = trace
                tickets.append(decoded)
        started = time.perf_counter()
        try:
            with self.tracing.span("model", batch_span, self.model_info.to_dict(), batch=len(tickets)):
                decisions = triage_tickets(tickets, self.model, self.router, self.policy)
            pairs = list(zip(tickets, decisions, strict=True))
        except Exception:
            # One bad ticket must not sink its batch: retry one by one, dead-letter what still fails.
            log.exception(
                "batch triage failed; retrying tickets one by one",
                batch=len(tickets),
                event_ids=[t.id for t in tickets],
            )
            pairs = []
            for ticket in tickets:
                try:
                    pairs.append((ticket, triage_tickets([ticket], self.model, self.router, self.policy)[0]))
                except Exception as exc:
                    failure = DecodeFailure(
                        raw_of[id(ticket)],
                        "processing_failed",
                        f"{type(exc).__name__}: {exc}"[:500],
                        id=ticket.id,
                    )
                    self._dead(result, failure, trace_of[id(ticket)])
        result.inference_s = time.perf_counter() - started
        now = self.clock()
        stamp = utc_iso(now)
        for ticket, decision in pairs:
            sent_ms = ticket.source.timestamp_ms
            latency_ms = (now * 1000 - sent_ms) if sent_ms is not None else 0.0
            outputs = ticket_outputs(ticket, decision, self.model_info, stamp, latency_ms)
            trace = trace_of[id(ticket)]
            result.outputs.extend(self._headed(outputs, trace, stamp, decision.intent.confidence, result))
            result.processed += 1
            result.intents[decision.intent.label] += 1
            for route in decision.routes:
                result.routes[route] += 1
            for reason in decision.reasons:
                result.escalations[reason.code.value] += 1
        return result

    def _headed(
        self, outputs: Sequence[Output], trace: InputTrace, stamp: str, confidence: float | None, result: BatchResult
    ) -> list[Output]:
        """``outputs`` with their headers: CloudEvents attributes, the model and the trace continued."""
        contracts = self.contracts
        assert contracts is not None
        headed = []
        for out in outputs:
            source = out.value.get("source")
            context = self.tracing.send(trace, out.topic, result.spans, key=out.key, message_id=out.value.get("id"))
            headers = contracts.headers(
                out.topic,
                event_id=event_id(out.topic, source, out.value.get("id")),
                time=stamp,
                trace=context,
                subject=out.value.get("id"),
                confidence=confidence,
            )
            headed.append(Output(out.topic, out.key, out.value, out.headers + headers))
        return headed

    def _dead(self, result: BatchResult, failure: DecodeFailure, trace: InputTrace) -> None:
        key = failure.raw.key
        stamp = utc_iso(self.clock())
        record = Output(DEADLETTER, key, dead_letter(failure, stamp))
        result.outputs.extend(self._headed([record], trace, stamp, None, result))
        result.dead_letters[failure.code] += 1
        log_dead_letter(failure)


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


def register_ticket_agent(
    app: faust.App,
    processor: TicketProcessor,
    sender: OutputSender,
    *,
    max_batch: int,
    max_wait_s: float,
    executor: ThreadPoolExecutor,
    on_batch: Callable[[BatchResult], None] | None = None,
    topic: str = TICKETS,
) -> None:
    """Attach the ticket agent to ``app``; batches of up to ``max_batch`` or ``max_wait_s`` seconds.

    Batches are pipelined: while the brokers acknowledge batch N's outputs, batch N+1 is in the model.
    At most one batch waits for acknowledgements (back-pressure). Faust would acknowledge a batch's
    events as soon as the loop moves on, so each event holds one extra reference, released only once
    the batch's outputs are durable: Faust commits an offset only when every event before it is acked.
    """
    source = app.topic(topic, key_type=bytes, value_type=bytes, allow_empty=True)

    async def deliver(events: Sequence[faust.types.EventT], result: BatchResult, timing: dict[str, float]) -> None:
        started = time.perf_counter()
        await sender.send_all(result.outputs)
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
        )

    @app.agent(source, name="streamer.agents.tickets")  # type: ignore[untyped-decorator]
    async def triage(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Task[None] | None = None
        try:
            async for events in stream.take_events(max_batch, within=max_wait_s):
                for event in events:
                    event.message.incref()
                took = time.perf_counter()
                result = await loop.run_in_executor(executor, processor, [raw_event(e) for e in events])
                timing = {"process_s": time.perf_counter() - took}
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(deliver(events, result, timing))
        finally:
            if in_flight is not None and not in_flight.done():
                await asyncio.shield(in_flight)
