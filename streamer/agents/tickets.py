"""The ticket agent: batches of raw records to triage decisions to output records.

The agent itself only moves bytes: it takes a batch, hands it to ``TicketProcessor`` in the inference
thread (the event loop never runs the model), produces every output of the batch together and waits for
the brokers' acknowledgement before Faust may commit the batch's offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import faust
import structlog
from jsonschema import Draft202012Validator

from streamer.agents.output import OutputSender, log_dead_letter
from streamer.agents.shadow import ShadowRun
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
from streamer.topics import DEADLETTER, TICKETS
from streamer.triage.dedup import EscalationDeduper
from streamer.triage.escalation import MODEL_REASONS, EscalationPolicy
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
    model_escalated: int = 0
    deduplicated: int = 0
    """Escalations not sent because they near-duplicate an earlier one."""
    shadow_agreement: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    """``(head, live label, shadow agreed)`` counts when a shadow bundle runs."""
    """Tickets escalated for the intent model's doubt (what the escalation budget spends)."""
    intents: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    inference_s: float = 0.0


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
    dedup: EscalationDeduper | None = None
    shadow: ShadowRun | None = None

    def __call__(self, raws: Sequence[RawEvent]) -> BatchResult:
        result = BatchResult(size=len(raws))
        tickets: list[Ticket] = []
        raw_of: dict[int, RawEvent] = {}
        for raw in raws:
            result.events_in[raw.source.topic] += 1
            if raw.source.timestamp_ms is not None:
                result.source_timestamps_ms.append(raw.source.timestamp_ms)
            decoded = decode_ticket(raw, self.validator, self.limits)
            if isinstance(decoded, DecodeFailure):
                self._dead(result, decoded)
            else:
                raw_of[id(decoded)] = raw
                tickets.append(decoded)
        started = time.perf_counter()
        try:
            decisions = triage_tickets(
                tickets, self.model, self.router, self.policy, dedup=self.dedup, now=self.clock()
            )
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
                    [decision] = triage_tickets(
                        [ticket], self.model, self.router, self.policy, dedup=self.dedup, now=self.clock()
                    )
                    pairs.append((ticket, decision))
                except Exception as exc:
                    failure = DecodeFailure(
                        raw_of[id(ticket)],
                        "processing_failed",
                        f"{type(exc).__name__}: {exc}"[:500],
                        id=ticket.id,
                    )
                    self._dead(result, failure)
        result.inference_s = time.perf_counter() - started
        now = self.clock()
        stamp = utc_iso(now)
        for ticket, decision in pairs:
            sent_ms = ticket.source.timestamp_ms
            latency_ms = (now * 1000 - sent_ms) if sent_ms is not None else 0.0
            result.outputs.extend(ticket_outputs(ticket, decision, self.model_info, stamp, latency_ms))
            result.processed += 1
            result.intents[decision.intent.label] += 1
            for route in decision.routes:
                result.routes[route] += 1
            for reason in decision.reasons:
                result.escalations[reason.code.value] += 1
            result.model_escalated += any(r.code in MODEL_REASONS for r in decision.reasons)
            result.deduplicated += decision.duplicate_of is not None
        if self.shadow is not None and pairs:
            try:  # the candidate must never cost the live path its batch
                outputs, agreement = self.shadow([t for t, _ in pairs], [d for _, d in pairs], stamp)
                result.outputs.extend(outputs)
                result.shadow_agreement.update(agreement)
            except Exception:
                log.exception("shadow triage failed; batch sent without shadow records", batch=len(pairs))
        return result

    def _dead(self, result: BatchResult, failure: DecodeFailure) -> None:
        key = failure.raw.key
        result.outputs.append(Output(DEADLETTER, key, dead_letter(failure, utc_iso(self.clock()))))
        result.dead_letters[failure.code] += 1
        log_dead_letter(failure)


def raw_event(event: faust.types.EventT) -> RawEvent:
    """Faust's event as our transport-free ``RawEvent``."""
    message = event.message
    timestamp = getattr(message, "timestamp", None)
    return RawEvent(
        value=message.value,
        key=message.key,
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
