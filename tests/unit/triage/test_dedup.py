"""Near-duplicate escalations within a window: sent once with a count, the rest named after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamer.events import DecodeLimits, RawEvent, Source, Ticket, decode_ticket
from streamer.topics import ESCALATIONS, SchemaRegistry
from streamer.triage.dedup import EscalationDeduper, template_key
from streamer.triage.escalation import EscalationPolicy
from streamer.triage.outputs import ModelInfo, ticket_outputs
from streamer.triage.routing import parse_router
from streamer.triage.tickets import triage_tickets

REPO = Path(__file__).resolve().parents[3]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
ROUTER = parse_router({"tickets": {"rules": [], "default": "q.general"}}, "tickets")


def _vec(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_window_scope_and_similarity_each_gate_a_duplicate() -> None:
    d = EscalationDeduper(window_s=60, min_cosine=0.95)
    a = _vec(1, 0, 0)
    assert d.first_of("T-1", a, {"customer:C1"}, now=0) is None
    assert d.first_of("T-2", _vec(1, 0.1, 0), {"customer:C1"}, now=10) == "T-1"  # cosine 0.995
    assert d.first_of("T-3", _vec(1, 0.1, 0), {"customer:C2"}, now=10) is None  # another customer
    assert d.first_of("T-4", _vec(1, 0.5, 0), {"customer:C1"}, now=20) is None  # cosine 0.89: not near enough
    # T-1 has left the window; T-4 is still in it but not near enough, so T-5 stands for itself
    assert d.first_of("T-5", a, {"customer:C1"}, now=70.5) is None
    assert d.first_of("T-6", a, {"customer:C1"}, now=71) == "T-5"
    assert len(d) == 2  # T-4 and T-5: T-1 and T-3 expired, T-2 and T-6 were folded, never remembered


def test_a_duplicate_is_folded_into_the_most_similar_match_in_scope_only() -> None:
    d = EscalationDeduper(window_s=60, min_cosine=0.9)
    d.first_of("far", _vec(1, 0.4, 0), {"template:x"}, now=0)
    d.first_of("near", _vec(1, 0.05, 0), {"customer:C"}, now=0)
    assert d.first_of("q", _vec(1, 0, 0), {"customer:C"}, now=1) == "near"
    assert d.first_of("r", _vec(1, 0, 0), {"template:x"}, now=1) == "far"
    later = EscalationDeduper(window_s=60, min_cosine=0.9)
    later.first_of("old", _vec(1, 0, 0), {"customer:C"}, now=0)
    assert later.first_of("new", _vec(1, 0, 0), {"customer:C"}, now=61) is None  # the window has passed


def test_memory_is_bounded() -> None:
    d = EscalationDeduper(window_s=1e9, min_cosine=0.99, max_entries=8)
    rng = np.random.default_rng(0)
    for i in range(50):
        d.first_of(f"T-{i}", _vec(*rng.standard_normal(16)), {"customer:C"}, now=i)
    assert len(d) <= 8


def test_template_key_masks_numbers_case_and_spacing() -> None:
    assert template_key("Checkout FAILED for order 1234  at 10:42") == template_key(
        "checkout failed for order 98 at 9:01"
    )
    assert template_key("Checkout failed for order 1") != template_key("Refund failed for order 1")


@dataclass
class _Scores:
    labels: list[str]
    probs: np.ndarray
    oos_score: np.ndarray
    embeddings: np.ndarray | None = None


class _Model:
    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> dict[str, _Scores]:
        n = len(texts)
        emb = np.stack([next(v for k, v in self.vectors.items() if k in t) for t in texts])
        unsure = np.full((n, 3), 1 / 3, dtype=np.float32)  # every ticket escalates (low confidence)
        flat = np.zeros(n, dtype=np.float32)
        return {
            "intent": _Scores(["a", "b", "c"], unsure, flat, emb),
            "priority": _Scores(["normal", "high"], np.tile([[0.9, 0.1]], (n, 1)).astype(np.float32), flat),
            "sentiment": _Scores(["neutral", "negative"], np.tile([[0.9, 0.1]], (n, 1)).astype(np.float32), flat),
        }


def _ticket(i: int, body: str, customer: str) -> Ticket:
    doc = {"id": f"T-{i}", "created_at": "2026-11-28T10:00:00Z", "body": body, "customer": {"id": customer}}
    t = decode_ticket(
        RawEvent(orjson.dumps(doc), Source("in", 0, i, 1000)), REGISTRY.validator("ticket.v1.json"), DecodeLimits()
    )
    assert isinstance(t, Ticket)
    return t


def test_storm_is_sent_once_with_a_count_and_the_rest_point_at_it() -> None:
    model = _Model({"checkout": _vec(1, 0, 0), "invoice": _vec(0, 1, 0)})
    policy = EscalationPolicy(min_confidence=0.6, min_margin=0.1, oos_threshold=0.5)
    # a monitoring script files the same template for many customers; one customer writes twice
    batch = [_ticket(i, f"checkout fails with 502 on order {1000 + i}", f"C{i}") for i in range(5)]
    batch += [_ticket(10, "invoice is wrong", "C9"), _ticket(11, "invoice is wrong!!", "C9")]
    batch += [_ticket(12, "invoice seems wrong", "C8")]  # same text area, other customer, other template
    dedup = EscalationDeduper(window_s=600, min_cosine=0.95)
    decisions = triage_tickets(batch, model, ROUTER, policy, dedup=dedup, now=0.0)
    assert all(d.escalate for d in decisions)
    assert [d.duplicate_of for d in decisions] == [None, "T-0", "T-0", "T-0", "T-0", None, "T-10", None]
    assert [d.duplicates for d in decisions] == [4, 0, 0, 0, 0, 1, 0, 0]
    info = ModelInfo("m", "1")
    sent = [
        o
        for t, d in zip(batch, decisions, strict=True)
        for o in ticket_outputs(t, d, info, "now", 0)
        if o.topic == ESCALATIONS
    ]
    assert [o.value["id"] for o in sent] == ["T-0", "T-10", "T-12"]
    assert sent[0].value["duplicates"] == 4 and "duplicates" not in sent[2].value
    REGISTRY.validator("escalation.v1.json").validate(sent[0].value)
    enriched = ticket_outputs(batch[1], decisions[1], info, "2026-11-28T10:00:00Z", 0)[0].value
    assert enriched["triage"]["escalation"]["duplicate_of"] == "T-0"
    REGISTRY.validator("enriched_ticket.v1.json").validate(enriched)
    # the next batch, still within the window, folds into the escalation already sent
    [again] = triage_tickets(
        [_ticket(20, "checkout fails with 502 on order 7", "C77")], model, ROUTER, policy, dedup=dedup, now=300.0
    )
    assert again.duplicate_of == "T-0"
    # a VIP's near-duplicate is still sent on its own
    vip = _ticket(21, "checkout fails with 502 on order 8", "C78")
    vip = Ticket(
        vip.id, {**vip.payload, "customer": {"id": "C78", "tier": "vip"}}, vip.source, vip.key, vip.text, False
    )
    [alone] = triage_tickets([vip], model, ROUTER, policy, dedup=dedup, now=301.0)
    assert alone.escalate and alone.duplicate_of is None
    # without a deduper, nothing is folded
    assert all(d.duplicate_of is None for d in triage_tickets(batch, model, ROUTER, policy))
