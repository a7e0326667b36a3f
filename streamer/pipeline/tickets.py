"""The ticket processor: a batch of raw records to triage decisions to sealed output records.

Kafka-free: the ticket agent (``streamer.agents.tickets``) runs it in the inference thread and only moves
bytes; ``streamer replay``, ``streamer triage tickets --file`` and the benchmarks run the same processor.
Every output is encoded here (``sealed``), so the event loop never serialises JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from jsonschema import Draft202012Validator

from streamer.events import DecodeFailure, DecodeLimits, Output, RawEvent, Source, Ticket, decode_ticket, encode
from streamer.headers import Contracts, event_id, incoming_trace
from streamer.pipeline.batch import Batch, log_dead_letter, sealed, utc_iso
from streamer.pipeline.shadow import ShadowRun
from streamer.privacy import Privacy
from streamer.topics import DEADLETTER
from streamer.tracing import InputTrace, Tracing
from streamer.triage.dedup import EscalationDeduper
from streamer.triage.escalation import MODEL_REASONS, BudgetSpender, EscalationPolicy
from streamer.triage.outputs import ModelInfo, ticket_outputs
from streamer.triage.routing import Router
from streamer.triage.tickets import TicketDecision, TicketModel, triage_tickets

log = structlog.get_logger(__name__)


@dataclass
class TicketProcessor:
    """Decode + triage + records for one batch; thread-safe as long as the model is."""

    model: TicketModel
    model_info: ModelInfo
    router: Router
    policy: EscalationPolicy
    validator: Draft202012Validator
    limits: DecodeLimits
    #: Output headers (``streamer.headers``: ``streamer.runtime.ticket_contracts`` for a worker's settings).
    contracts: Contracts
    clock: Callable[[], float] = time.time
    #: Applied to every record just before it leaves (default: everything masked, raw dead letters).
    privacy: Privacy = field(default_factory=Privacy)
    #: Spans (``streamer.tracing``); default: off, trace context still carried from input to outputs.
    tracing: Tracing = field(default_factory=Tracing)
    dedup: EscalationDeduper | None = None
    shadow: ShadowRun | None = None
    #: Moves the escalation score threshold down to spend a budget calm traffic leaves unused.
    spender: BudgetSpender | None = None
    #: A ticket's own escalation-score threshold, from where it came (``None``: the batch's). A replay of the
    #: live bundle judges each ticket at the threshold its live decision used, so only the model can differ.
    threshold_of: Callable[[Source], float | None] | None = None

    @property
    def escalation_threshold(self) -> float | None:
        """The escalation score the next batch escalates at (``None`` when the bundle has no score)."""
        return self.spender.threshold if self.spender is not None else self.policy.score_threshold

    def __call__(self, raws: Sequence[RawEvent]) -> Batch:
        tracing = self.tracing
        traces = [
            tracing.receive(incoming_trace(r.headers), s.topic, partition=s.partition, offset=s.offset, key=r.key)
            for r in raws
            for s in (r.source,)
        ]
        with tracing.batch(traces, size=len(raws)) as batch_span:
            return self._process(raws, traces, batch_span)

    def _process(self, raws: Sequence[RawEvent], traces: Sequence[InputTrace], batch_span: Any) -> Batch:
        result = Batch(path="tickets", size=len(raws))
        result.spans.extend(t.span for t in traces if t.span is not None)
        tickets: list[Ticket] = []
        raw_of: dict[int, RawEvent] = {}
        trace_of: dict[int, InputTrace] = {}
        for raw, trace in zip(raws, traces, strict=True):
            result.events_in[raw.source.topic] += 1
            if raw.source.timestamp_ms is not None:
                result.source_timestamps_ms.append(raw.source.timestamp_ms)
            try:
                decoded = decode_ticket(raw, self.validator, self.limits)
            except Exception as exc:
                decoded = DecodeFailure.decoder_error(raw, exc)
            if isinstance(decoded, DecodeFailure):
                self._dead(result, decoded, trace)
            else:
                raw_of[id(decoded)] = raw
                trace_of[id(decoded)] = trace
                tickets.append(decoded)
        started = time.perf_counter()
        policy = self.policy if self.spender is None else self.spender.policy(self.policy)
        given = self.threshold_of
        thresholds = [given(raw_of[id(t)].source) for t in tickets] if given is not None else None
        try:
            with self.tracing.span("model", batch_span, self.model_info.to_dict(), batch=len(tickets)):
                decisions = triage_tickets(
                    tickets, self.model, self.router, policy, dedup=self.dedup, now=self.clock(), thresholds=thresholds
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
            for i, ticket in enumerate(tickets):
                try:
                    one = [thresholds[i]] if thresholds is not None else None
                    [decision] = triage_tickets(
                        [ticket], self.model, self.router, policy, dedup=self.dedup, now=self.clock(), thresholds=one
                    )
                    pairs.append((ticket, decision))
                except Exception as exc:
                    failure = DecodeFailure(
                        raw_of[id(ticket)],
                        "processing_failed",
                        f"{type(exc).__name__}: {exc}"[:500],
                        id=ticket.id,
                    )
                    self._dead(result, failure, trace_of[id(ticket)])
        result.inference_s = time.perf_counter() - started
        if self.spender is not None:
            self.spender.observe(s for _, d in pairs if (s := d.intent.escalation_score) is not None)
        now = self.clock()
        stamp = utc_iso(now)
        for ticket, decision in pairs:
            sent_ms = ticket.source.timestamp_ms
            latency_ms = (now * 1000 - sent_ms) if sent_ms is not None else 0.0
            outputs = ticket_outputs(ticket, decision, self.model_info, stamp, latency_ms)
            outputs = self.privacy.ticket_outputs(outputs, decision.pii_values)
            trace = trace_of[id(ticket)]
            confidence = decision.intent.confidence
            result.outputs.extend(self._sealed(outputs, trace, stamp, confidence, result, self.contracts))
            result.processed += 1
            result.intents[decision.intent.label] += 1
            for route in decision.routes:
                result.routes[route] += 1
            for reason in decision.reasons:
                result.escalations[reason.code.value] += 1
            result.escalated += decision.escalate and decision.duplicate_of is None
            result.model_escalated += any(r.code in MODEL_REASONS for r in decision.reasons)
            result.deduplicated += decision.duplicate_of is not None
        if self.shadow is not None and pairs:
            self._shadow(pairs, trace_of, stamp, result)
        return result

    def _shadow(
        self,
        pairs: Sequence[tuple[Ticket, TicketDecision]],
        trace_of: Mapping[int, InputTrace],
        stamp: str,
        result: Batch,
    ) -> None:
        """The shadow bundle's records, headed and encoded like the live ones (its own model in the headers)."""
        shadow = self.shadow
        assert shadow is not None
        try:  # the candidate must never cost the live path its batch
            tickets = [t for t, _ in pairs]
            outputs, agreement = shadow(tickets, [d for _, d in pairs], stamp, self.privacy)
            contracts = shadow.contracts
            for ticket, out in zip(tickets, outputs, strict=True):
                if contracts is None:
                    result.outputs.append(sealed(out.topic, out.key, out.value, out.headers))
                else:
                    trace = trace_of[id(ticket)]
                    result.outputs.extend(self._sealed([out], trace, stamp, None, result, contracts))
            result.shadow_agreement.update(agreement)
        except Exception:
            log.exception("shadow triage failed; batch sent without shadow records", batch=len(pairs))

    def _sealed(
        self,
        outputs: Sequence[Output],
        trace: InputTrace,
        stamp: str,
        confidence: float | None,
        result: Batch,
        contracts: Contracts,
    ) -> list[Output]:
        """``outputs`` of one input with their headers, encoded; a ticket's enriched record and its routed
        copies share one value, encoded once."""
        encoded: dict[int, bytes] = {}
        sealed_outputs = []
        for out in outputs:
            value = out.value
            headers = self._headers(out, trace, stamp, confidence, result, contracts)
            data = encoded.get(id(value))
            if data is None:
                data = encoded[id(value)] = encode(value)
            sealed_outputs.append(Output(out.topic, out.key, value, out.headers + headers, data))
        return sealed_outputs

    def _headers(
        self,
        out: Output,
        trace: InputTrace,
        stamp: str,
        confidence: float | None,
        result: Batch,
        contracts: Contracts,
    ) -> tuple[tuple[str, bytes], ...]:
        """An output's headers: CloudEvents attributes, the model and the input's trace continued."""
        value = out.value
        context = self.tracing.send(trace, out.topic, result.spans, key=out.key, message_id=value.get("id"))
        return contracts.headers(
            out.topic,
            event_id=event_id(out.topic, value.get("source"), value.get("id")),
            time=stamp,
            trace=context,
            subject=value.get("id"),
            confidence=confidence,
        )

    def _dead(self, result: Batch, failure: DecodeFailure, trace: InputTrace) -> None:
        key = failure.raw.key
        stamp = utc_iso(self.clock())
        record = Output(DEADLETTER, key, self.privacy.dead_letter(failure, stamp))
        result.outputs.extend(self._sealed([record], trace, stamp, None, result, self.contracts))
        result.dead_letters[failure.code] += 1
        log_dead_letter(failure)
