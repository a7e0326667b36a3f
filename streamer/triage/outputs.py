"""Decisions to output records: enriched, team queues, escalations. Pure; the caller supplies the time.

Kept apart from the decisions themselves so that the worker and the replay tool emit identical records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamer.events import Output, Ticket
from streamer.topics import ESCALATIONS, TICKETS_ENRICHED
from streamer.triage.tickets import TicketDecision


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def enriched_ticket(
    ticket: Ticket, decision: TicketDecision, model: ModelInfo, processed_at: str, latency_ms: float
) -> dict[str, Any]:
    """The ``enriched_ticket.v1.json`` record: the ticket, its free text redacted, plus every decision.

    Subject, body and metadata carry placeholders here; ``streamer.privacy`` puts back, per output topic,
    what that topic's policy keeps or pseudonymises.
    """
    return {
        "id": ticket.id,
        "source": ticket.source.to_dict(),
        "ticket": redacted_payload(ticket, decision),
        "triage": decision.triage_dict(),
        "model": model.to_dict(),
        "processed_at": processed_at,
        "latency_ms": round(max(latency_ms, 0.0), 3),
    }


def redacted_payload(ticket: Ticket, decision: TicketDecision) -> dict[str, Any]:
    """The ticket as sent, with the redacted subject, body and metadata in place of the originals."""
    payload = dict(ticket.payload)
    payload["body"] = decision.redacted_body
    if "subject" in payload and isinstance(payload["subject"], str):
        payload["subject"] = decision.redacted_subject
    if decision.redacted_metadata is not None:
        payload["metadata"] = decision.redacted_metadata
    return payload


def escalation(ticket: Ticket, decision: TicketDecision, model: ModelInfo, escalated_at: str) -> dict[str, Any]:
    """The ``escalation.v1.json`` record: redacted text only, reasons, candidates, the id to join back."""
    record: dict[str, Any] = {
        "id": ticket.id,
        "kind": "ticket",
        "source": ticket.source.to_dict(),
        "reasons": [r.to_dict() for r in decision.reasons],
        "redacted_text": decision.redacted_body,
        "candidates": [s.to_dict() for s in decision.intent.top],
        "labels": {
            "intent": decision.intent.label,
            "priority": decision.priority.to_dict(),
            "sentiment": decision.sentiment.to_dict(),
            "language": decision.language.to_dict(),
            "routes": list(decision.routes),
        },
        "pii_counts": dict(decision.pii_counts),
        "customer_tier": ticket.customer_tier,
        "model": model.to_dict(),
        "escalated_at": escalated_at,
    }
    if decision.redacted_subject:
        record["redacted_subject"] = decision.redacted_subject
    if decision.duplicates:
        record["duplicates"] = decision.duplicates
    return record


def ticket_outputs(
    ticket: Ticket, decision: TicketDecision, model: ModelInfo, now: str, latency_ms: float
) -> list[Output]:
    """All records for one ticket, keyed by the input's key (or its id) so per-ticket order holds."""
    key = ticket.key if ticket.key is not None else ticket.id.encode()
    enriched = enriched_ticket(ticket, decision, model, now, latency_ms)
    outputs = [Output(TICKETS_ENRICHED, key, enriched)]
    outputs.extend(Output(dest, key, enriched) for dest in decision.routes)
    if decision.escalate and decision.duplicate_of is None:
        outputs.append(Output(ESCALATIONS, key, escalation(ticket, decision, model, now)))
    return outputs
