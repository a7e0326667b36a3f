"""The pure ticket core with a scripted model: decisions, redaction, routing and reasons per ticket."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamer.events import DecodeLimits, RawEvent, Source, Ticket, decode_ticket
from streamer.topics import SchemaRegistry
from streamer.triage.escalation import EscalationPolicy
from streamer.triage.outputs import ModelInfo, ticket_outputs
from streamer.triage.routing import parse_router
from streamer.triage.tickets import triage_tickets

REPO = Path(__file__).resolve().parents[3]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
INTENTS = ["refund_request", "bug_report", "order_status"]


@dataclass
class Scores:
    labels: list[str]
    probs: np.ndarray
    oos_score: np.ndarray


class ScriptedModel:
    """Returns the probabilities a test scripted for each text (by a marker word), and counts calls."""

    def __init__(self, script: Mapping[str, tuple[list[float], float, str, str]]) -> None:
        self.script = script
        self.calls = 0

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> dict[str, Scores]:
        self.calls += 1
        rows = [next(v for k, v in self.script.items() if k in t) for t in texts]
        intent = np.array([r[0] for r in rows], dtype=np.float32)
        oos = np.array([r[1] for r in rows], dtype=np.float32)
        pri_labels, sent_labels = ["low", "normal", "high", "urgent"], ["negative", "neutral", "positive"]
        pri = np.array([[0.9 if lab == r[2] else 0.1 / 3 for lab in pri_labels] for r in rows], dtype=np.float32)
        sent = np.array([[0.9 if lab == r[3] else 0.05 for lab in sent_labels] for r in rows], dtype=np.float32)
        return {
            "intent": Scores(INTENTS, intent, oos),
            "priority": Scores(pri_labels, pri, np.zeros(len(rows), dtype=np.float32)),
            "sentiment": Scores(sent_labels, sent, np.zeros(len(rows), dtype=np.float32)),
        }


ROUTER = parse_router(
    {
        "tickets": {
            "rules": [
                {"name": "urgent", "match": {"priority": "urgent"}, "to": "q.urgent", "continue": True},
                {"name": "billing", "match": {"intent": "refund_request"}, "to": "q.billing"},
            ],
            "default": "q.general",
        }
    },
    "tickets",
)
POLICY = EscalationPolicy(min_confidence=0.6, min_margin=0.1, oos_threshold=0.5)


def ticket(i: int, body: str, tier: str = "pro", language: str | None = "en") -> Ticket:
    doc = {"id": f"T-{i}", "created_at": "2026-11-28T10:00:00Z", "body": body, "customer": {"id": "C", "tier": tier}}
    if language:
        doc["language"] = language
    t = decode_ticket(
        RawEvent(orjson.dumps(doc), Source("in", 0, i, 1000)), REGISTRY.validator("ticket.v1.json"), DecodeLimits()
    )
    assert isinstance(t, Ticket)
    return t


def test_one_model_call_per_batch_and_order_kept() -> None:
    model = ScriptedModel(
        {
            "REFUND": ([0.9, 0.05, 0.05], 0.1, "normal", "neutral"),
            "CRASH": ([0.1, 0.8, 0.1], 0.1, "urgent", "negative"),
        }
    )
    batch = [ticket(1, "REFUND please for order ORD-123456"), ticket(2, "CRASH on login since v2.3.1")]
    decisions = triage_tickets(batch, model, ROUTER, POLICY)
    assert model.calls == 1
    assert [d.ticket_id for d in decisions] == ["T-1", "T-2"]
    refund, crash = decisions
    assert refund.intent.label == "refund_request" and refund.routes == ("q.billing",)
    assert refund.reasons == ()
    assert refund.entities["order_ids"][0]["value"] == "ORD-123456"
    assert crash.routes == ("q.urgent", "q.general")
    assert [r.code.value for r in crash.reasons] == ["urgent_negative"]
    assert abs(crash.intent.margin - 0.7) < 1e-6


def test_unsure_out_of_scope_and_foreign_tickets_escalate() -> None:
    model = ScriptedModel(
        {
            "UNSURE": ([0.45, 0.4, 0.15], 0.2, "normal", "neutral"),
            "WEATHER": ([0.9, 0.05, 0.05], 0.7, "low", "neutral"),
            "Hallo": ([0.9, 0.05, 0.05], 0.1, "normal", "neutral"),
        }
    )
    unsure, weather, german = triage_tickets(
        [
            ticket(1, "UNSURE what this is"),
            ticket(2, "WEATHER today?"),
            ticket(3, "Hallo, ich möchte bitte mein Geld für die letzte Bestellung zurück haben.", language=None),
        ],
        model,
        ROUTER,
        POLICY,
    )
    assert {r.code.value for r in unsure.reasons} == {"low_confidence", "small_margin"}
    assert [r.code.value for r in weather.reasons] == ["out_of_scope"]
    assert german.language.code == "de" and german.language.declared is None
    assert [r.code.value for r in german.reasons] == ["unsupported_language"]


def test_pii_is_counted_and_redacted_in_the_escalation_record() -> None:
    model = ScriptedModel({"REFUND": ([0.9, 0.05, 0.05], 0.1, "normal", "neutral")})
    body = "REFUND to jane@example.org please, card 4111 1111 1111 1111, call +1 415 555 0100."
    [t] = [ticket(1, body, tier="vip")]
    [decision] = triage_tickets([t], model, ROUTER, POLICY)
    assert decision.pii_counts == {"EMAIL": 1, "CARD": 1, "PHONE": 1}
    outputs = ticket_outputs(t, decision, ModelInfo("m", "1"), "2026-11-28T10:00:01Z", 1000.0)
    assert [o.topic for o in outputs] == ["support.tickets.enriched.v1", "q.billing", "llm.escalations.v1"]
    escalation = outputs[-1].value
    blob = orjson.dumps(escalation).decode()
    for secret in ("jane@example.org", "4111 1111 1111 1111", "555 0100"):
        assert secret not in blob
    assert "[EMAIL_1]" in escalation["redacted_text"]
    assert REGISTRY.errors("escalation.v1.json", escalation) == []
    assert REGISTRY.errors("enriched_ticket.v1.json", outputs[0].value) == []
    assert all(o.key == b"T-1" or o.key is None for o in outputs)


def test_empty_batch() -> None:
    model = ScriptedModel({})
    assert triage_tickets([], model, ROUTER, POLICY) == []
    assert model.calls == 0
