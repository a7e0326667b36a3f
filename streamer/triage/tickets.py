"""Ticket triage on a batch: classify, extract, redact, route, escalate. Pure: no I/O, no clock.

The worker, the replay tool and the benchmarks all call ``triage_tickets``; the model is passed in, so
tests can use a small real bundle and the core stays free of Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from streamer.events import Ticket
from streamer.triage.dedup import EscalationDeduper, template_key
from streamer.triage.escalation import EscalationPolicy, Reason, ReasonCode, TicketSignals, ticket_reasons
from streamer.triage.extract import extract
from streamer.triage.language import detect_languages
from streamer.triage.pii import Redaction, redact_all
from streamer.triage.routing import Router

#: Heads every ticket bundle provides.
TICKET_HEADS = ("intent", "priority", "sentiment")
TOP_K = 3


class HeadScores(Protocol):
    """What a classification head returns for a batch (see ``streamer.models.heads.HeadOutput``)."""

    @property
    def labels(self) -> Sequence[str]: ...

    @property
    def probs(self) -> np.ndarray: ...

    @property
    def oos_score(self) -> np.ndarray: ...


class TicketModel(Protocol):
    """The model side of triage: one encoder pass, several heads."""

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> Mapping[str, HeadScores]: ...


@dataclass(frozen=True, slots=True)
class Scored:
    label: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class IntentDecision:
    label: str
    confidence: float
    margin: float
    oos_score: float
    top: tuple[Scored, ...]
    escalation_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "margin": round(self.margin, 4),
            "oos_score": round(self.oos_score, 4),
            "top": [s.to_dict() for s in self.top],
            **({} if self.escalation_score is None else {"escalation_score": round(self.escalation_score, 4)}),
        }


@dataclass(frozen=True, slots=True)
class LanguageDecision:
    code: str
    confidence: float
    declared: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "confidence": round(self.confidence, 4), "declared": self.declared}


@dataclass(frozen=True, slots=True)
class TicketDecision:
    """Everything decided about one ticket; ``streamer.events`` turns it into output records."""

    ticket_id: str
    intent: IntentDecision
    priority: Scored
    sentiment: Scored
    language: LanguageDecision
    entities: Mapping[str, Any]
    pii_counts: Mapping[str, int]
    redacted_subject: str
    redacted_body: str
    routes: tuple[str, ...]
    matched_rules: tuple[str, ...]
    reasons: tuple[Reason, ...]
    truncated: bool
    #: The ticket's ``metadata`` with every string redacted (``None`` when the ticket has none).
    redacted_metadata: Any = None
    #: ``[KIND_N]`` -> ``(kind, value as written)`` for every placeholder of the record: what the privacy
    #: policy may put back (kept or pseudonymised) on the topics that allow it. Never serialised as is.
    pii_values: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    duplicate_of: str | None = None
    """The id of an earlier escalation this one near-duplicates (then it is not sent itself)."""
    duplicates: int = 0
    """Near-duplicates of this escalation folded into it within its batch."""
    threshold: float | None = None
    """The escalation-score threshold the ticket was judged by (``None`` when the bundle has no score)."""

    @property
    def escalate(self) -> bool:
        return bool(self.reasons)

    def triage_dict(self) -> dict[str, Any]:
        """The ``triage`` section of ``enriched_ticket.v1.json``."""
        return {
            "intent": self.intent.to_dict(),
            "priority": self.priority.to_dict(),
            "sentiment": self.sentiment.to_dict(),
            "language": self.language.to_dict(),
            "entities": dict(self.entities),
            "pii": {"counts": dict(self.pii_counts)},
            "routes": list(self.routes),
            "matched_rule": self.matched_rules[0] if self.matched_rules else "default",
            "escalation": {
                "escalate": self.escalate,
                "reasons": [r.to_dict() for r in self.reasons],
                **({"threshold": self.threshold} if self.threshold is not None else {}),
                **({"duplicate_of": self.duplicate_of} if self.duplicate_of else {}),
            },
            "truncated": self.truncated,
        }


def _intent(head: HeadScores, row: int) -> IntentDecision:
    probs = head.probs[row]
    order = np.argsort(-probs)[:TOP_K]
    top = tuple(Scored(head.labels[i], float(probs[i])) for i in order)
    second = float(probs[order[1]]) if len(order) > 1 else 0.0
    score = getattr(head, "escalation_score", None)  # heads without an escalation score have none
    return IntentDecision(
        label=top[0].label,
        confidence=top[0].confidence,
        margin=max(0.0, top[0].confidence - second),
        oos_score=float(np.clip(head.oos_score[row], 0.0, 1.0)),
        top=top,
        escalation_score=None if score is None else float(score[row]),
    )


def _scored(head: HeadScores, row: int) -> Scored:
    probs = head.probs[row]
    best = int(np.argmax(probs))
    return Scored(head.labels[best], float(probs[best]))


def triage_tickets(
    tickets: Sequence[Ticket],
    model: TicketModel,
    router: Router,
    policy: EscalationPolicy,
    *,
    dedup: EscalationDeduper | None = None,
    now: float = 0.0,
    thresholds: Sequence[float | None] | None = None,
) -> list[TicketDecision]:
    """Decide a batch: one model pass for all heads, then rules per ticket. Order is preserved.

    With ``dedup``, escalations that near-duplicate an earlier one (see ``streamer.triage.dedup``) at time
    ``now`` are marked ``duplicate_of`` it instead of being sent. ``thresholds`` (one per ticket, ``None``
    keeps the policy's) judges tickets at given escalation-score thresholds: a replay judges each ticket at
    the one its live decision used.
    """
    if not tickets:
        return []
    texts = [t.text for t in tickets]
    heads = model.predict(texts, TICKET_HEADS)
    intents, priorities, sentiments = heads["intent"], heads["priority"], heads["sentiment"]
    detected = detect_languages(texts)
    decisions: list[TicketDecision] = []
    for row, ticket in enumerate(tickets):
        intent = _intent(intents, row)
        priority = _scored(priorities, row)
        sentiment = _scored(sentiments, row)
        declared = ticket.declared_language
        code, lang_conf = (declared, 1.0) if declared else detected[row]
        language = LanguageDecision(code=code, confidence=float(lang_conf), declared=declared)
        metadata = ticket.payload.get("metadata")
        meta_strings = _strings(metadata) if metadata else []
        same_text = ticket.text == ticket.body
        fields = [ticket.subject, ticket.body, *meta_strings]
        redacted = redact_all(fields if same_text else [*fields, ticket.text])
        redacted_subject, redacted_body = redacted[0], redacted[1]
        redacted_text = redacted_body if same_text else redacted[-1]
        pii_counts = dict(redacted_body.counts)
        for kind, n in redacted_subject.counts.items():
            pii_counts[kind] = pii_counts.get(kind, 0) + n
        ticket_policy = policy
        if thresholds is not None and (given := thresholds[row]) is not None and policy.score_threshold is not None:
            ticket_policy = replace(policy, score_threshold=given)
        reasons = ticket_reasons(
            TicketSignals(
                intent=intent.label,
                confidence=intent.confidence,
                margin=intent.margin,
                oos_score=intent.oos_score,
                priority=priority.label,
                sentiment=sentiment.label,
                tier=ticket.customer_tier,
                language=language.code,
                language_confidence=language.confidence,
                text=ticket.body,
                escalation_score=intent.escalation_score,
            ),
            ticket_policy,
        )
        route = router.route(
            {
                "intent": intent.label,
                "priority": priority.label,
                "sentiment": sentiment.label,
                "tier": ticket.customer_tier,
                "language": language.code,
                "channel": ticket.channel,
                "escalated": bool(reasons),
                "reason": [r.code.value for r in reasons],
            }
        )
        decisions.append(
            TicketDecision(
                ticket_id=ticket.id,
                intent=intent,
                priority=priority,
                sentiment=sentiment,
                language=language,
                entities=extract(ticket.text, redacted_text).to_dict(),
                pii_counts=pii_counts,
                redacted_subject=redacted_subject.text,
                redacted_body=redacted_body.text,
                routes=route.destinations,
                matched_rules=route.rules,
                reasons=tuple(reasons),
                truncated=ticket.truncated,
                redacted_metadata=_replace_strings(metadata, iter(r.text for r in redacted[2 : 2 + len(meta_strings)]))
                if metadata
                else metadata,
                pii_values=_values(redacted),
                threshold=ticket_policy.score_threshold if intent.escalation_score is not None else None,
            )
        )
    embeddings = getattr(intents, "embeddings", None)
    if dedup is not None and embeddings is not None:
        decisions = _fold_duplicates(tickets, decisions, embeddings, dedup, now)
    return decisions


def _strings(value: Any) -> list[str]:
    """Every string leaf of a JSON value, depth first, in document order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _replace_strings(value: Any, replacements: Iterator[str]) -> Any:
    """``value`` with its string leaves taken, in ``_strings`` order, from ``replacements``."""
    if isinstance(value, str):
        return next(replacements)
    if isinstance(value, Mapping):
        return {k: _replace_strings(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, replacements) for v in value]
    return value


def _values(redactions: Sequence[Redaction]) -> dict[str, tuple[str, str]]:
    values: dict[str, tuple[str, str]] = {}
    for red in redactions:
        for span, token in zip(red.spans, red.placeholders, strict=True):
            values.setdefault(token, (span.kind, span.value))
    return values


def _fold_duplicates(
    tickets: Sequence[Ticket],
    decisions: list[TicketDecision],
    embeddings: np.ndarray,
    dedup: EscalationDeduper,
    now: float,
) -> list[TicketDecision]:
    folded: dict[str, int] = {}
    out = list(decisions)
    for row, (ticket, decision) in enumerate(zip(tickets, decisions, strict=True)):
        if not decision.escalate or any(r.code is ReasonCode.VIP_CUSTOMER for r in decision.reasons):
            continue  # a VIP's ticket is answered on its own, never folded into someone else's
        customer = (ticket.payload.get("customer") or {}).get("id")
        scopes = {f"template:{template_key(decision.redacted_body)}"}
        if customer:
            scopes.add(f"customer:{customer}")
        first = dedup.first_of(ticket.id, embeddings[row], scopes, now)
        if first is not None:
            out[row] = replace(decision, duplicate_of=first)
            folded[first] = folded.get(first, 0) + 1
    if folded:
        out = [replace(d, duplicates=folded[d.ticket_id]) if d.ticket_id in folded else d for d in out]
    return out
