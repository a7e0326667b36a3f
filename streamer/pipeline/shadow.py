"""Shadow bundles: a candidate bundle decides the same batches as the live one, off the record.

Its enriched records go to ``<enriched topic>.shadow.<version>`` (keyed like the live ones) and the worker
counts, per head and live label, how often the two agree, so a candidate can be judged on live traffic
before it takes over. When both bundles share the encoder (same model files, tokenizer and length), the
shadow reuses the live embeddings: its heads cost a few matrix products, not a second encoder pass.
``streamer replay`` stays the offline twin: the same comparison over a past range of the topic.

Shadow records are rendered by the privacy policy of the enriched topic they mirror and, with ``contracts``,
carry the same CloudEvents headers as live records, naming the shadow bundle as their model.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from streamer.events import Output, Ticket
from streamer.headers import Contracts
from streamer.pipeline.bundle import Bundle
from streamer.privacy import Privacy
from streamer.topics import TICKETS_ENRICHED
from streamer.triage.escalation import BudgetSpender, EscalationPolicy
from streamer.triage.outputs import ModelInfo, enriched_ticket
from streamer.triage.routing import Router
from streamer.triage.tickets import TicketDecision, TicketModel, triage_tickets

log = structlog.get_logger(__name__)

#: What agreement is counted on: the three ticket heads and the escalation decision.
COMPARED = ("intent", "priority", "sentiment", "escalate")


def shadow_topic(version: str) -> str:
    """The declared name of the shadow topic of a bundle version (the worker adds its topic prefix)."""
    return f"{TICKETS_ENRICHED}.shadow.{version}"


def shares_encoder(live_manifest: Mapping[str, Any], shadow_manifest: Mapping[str, Any]) -> bool:
    """True when both bundles embed identically: same model weights, tokenizer and encoder settings."""
    files = ("model/model.bin", "tokenizer.json")
    live_files, shadow_files = live_manifest.get("files", {}), shadow_manifest.get("files", {})
    return all(live_files.get(f) and live_files.get(f) == shadow_files.get(f) for f in files) and (
        live_manifest.get("encoder") == shadow_manifest.get("encoder")
    )


class EmbeddingTap:
    """The live bundle as a ``TicketModel`` that keeps each thread's last embeddings for the shadow."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:  # name, version, heads, encoder... of the live bundle
        return getattr(self.bundle, name)

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> Mapping[str, Any]:
        embeddings = self.bundle.embed(texts)
        self._local.last = (list(texts), embeddings)
        return self.bundle.predict_embeddings(embeddings, heads)

    def last(self, texts: Sequence[str]) -> Any | None:
        """The embeddings of ``texts`` if they were the last ones this thread embedded."""
        last = getattr(self._local, "last", None)
        return last[1] if last is not None and last[0] == list(texts) else None


@dataclass
class _Reuse:
    bundle: Bundle
    embeddings: Any

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> Mapping[str, Any]:
        return self.bundle.predict_embeddings(self.embeddings, heads)


@dataclass
class ShadowRun:
    """The shadow bundle with its own policy and rules; :meth:`__call__` decides a batch beside the live one."""

    bundle: Bundle
    model_info: ModelInfo
    router: Router
    policy: EscalationPolicy
    topic: str
    tap: EmbeddingTap | None = None
    """Set when the encoders are the same: the live embeddings are reused."""
    contracts: Contracts | None = None
    """Headers of the shadow topic (the enriched topic's type and schema, the shadow model); ``None``: none."""
    spender: BudgetSpender | None = None
    """The shadow's own spending of its budget, as it would run live (``STREAMER_ESCALATE_SPEND_WINDOW``)."""

    def __call__(
        self, tickets: Sequence[Ticket], live: Sequence[TicketDecision], stamp: str, privacy: Privacy | None = None
    ) -> tuple[list[Output], Counter[tuple[str, str, bool]]]:
        """Shadow records (one per ticket, in order; rendered by ``privacy`` as enriched records are) and
        ``(head, live label, agreed)`` counts for a batch the live bundle decided."""
        if not tickets:
            return [], Counter()
        texts = [t.text for t in tickets]
        reused = self.tap.last(texts) if self.tap is not None else None
        model: TicketModel = _Reuse(self.bundle, reused) if reused is not None else self.bundle
        policy = self.policy if self.spender is None else self.spender.policy(self.policy)
        decisions = triage_tickets(tickets, model, self.router, policy)
        if self.spender is not None:
            self.spender.observe(s for d in decisions if (s := d.intent.escalation_score) is not None)
        outputs: list[Output] = []
        counts: Counter[tuple[str, str, bool]] = Counter()
        for ticket, mine, theirs in zip(tickets, decisions, live, strict=True):
            key = ticket.key if ticket.key is not None else ticket.id.encode()
            record = Output(TICKETS_ENRICHED, key, enriched_ticket(ticket, mine, self.model_info, stamp, 0.0))
            if privacy is not None:
                [record] = privacy.ticket_outputs([record], mine.pii_values)
            outputs.append(Output(self.topic, key, record.value))
            for head, a, b in (
                ("intent", theirs.intent.label, mine.intent.label),
                ("priority", theirs.priority.label, mine.priority.label),
                ("sentiment", theirs.sentiment.label, mine.sentiment.label),
                ("escalate", str(theirs.escalate).lower(), str(mine.escalate).lower()),
            ):
                counts[(head, a, a == b)] += 1
        return outputs, counts
