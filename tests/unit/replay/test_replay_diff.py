"""The comparison of live and replayed decisions, on hand-made enriched records (no Kafka, no model)."""

from __future__ import annotations

from typing import Any

from streamer.replay.diff import (
    KINDS,
    Decision,
    DiffBuilder,
    changed_kinds,
    compare,
    decision_of,
    decisions,
    redacted_excerpt,
)

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.org"


def record(
    ticket_id: str,
    *,
    intent: str = "order_status",
    priority: str = "normal",
    sentiment: str = "neutral",
    routes: tuple[str, ...] = ("support.queue.orders.v1",),
    reasons: tuple[str, ...] = (),
    partition: int = 0,
    offset: int = 0,
    body: str = "Where is my order?",
    model: str = "default",
) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "source": {"topic": "support.tickets.v1", "partition": partition, "offset": offset, "timestamp_ms": 1},
        "ticket": {"id": ticket_id, "created_at": "2026-11-27T10:00:00Z", "subject": "Help", "body": body},
        "triage": {
            "intent": {"label": intent, "confidence": 0.9, "margin": 0.5, "oos_score": 0.1, "top": []},
            "priority": {"label": priority, "confidence": 0.8},
            "sentiment": {"label": sentiment, "confidence": 0.8},
            "routes": list(routes),
            "escalation": {"escalate": bool(reasons), "reasons": [{"code": c, "detail": "x"} for c in reasons]},
        },
        "model": {"name": model, "version": "1"},
    }


def test_decision_of_reads_the_enriched_record() -> None:
    d = decision_of(record("T1", reasons=("vip_customer", "low_confidence"), partition=2, offset=9))
    assert d == Decision(
        id="T1",
        partition=2,
        offset=9,
        intent="order_status",
        priority="normal",
        sentiment="neutral",
        routes=frozenset({"support.queue.orders.v1"}),
        escalate=True,
        reasons=frozenset({"vip_customer", "low_confidence"}),
        model="default@1",
    )
    assert d.value("reasons") == "low_confidence, vip_customer"
    assert d.value("escalation") == "yes"


def test_routes_and_reasons_compare_as_sets() -> None:
    a = decision_of(record("T", routes=("a", "b"), reasons=("x", "y")))
    b = decision_of(record("T", routes=("b", "a"), reasons=("y", "x")))
    assert changed_kinds(a, b) == []
    c = decision_of(record("T", routes=("a",), reasons=("x",)))
    assert changed_kinds(a, c) == ["routes", "reasons"]


def test_each_kind_of_change_is_counted_with_a_confusion_table() -> None:
    live = decisions(
        [
            record("A", intent="refund_request", routes=("billing",)),
            record("B", intent="refund_request", routes=("billing",)),
            record("C", intent="return_item", routes=("orders",)),
            record("D", priority="high"),
            record("E", reasons=("vip_customer",)),
            record("F"),
        ]
    )
    replay = decisions(
        [
            record("A", intent="return_item", routes=("orders",)),
            record("B", intent="return_item", routes=("orders",)),
            record("C", intent="refund_request", routes=("billing",)),
            record("D", priority="urgent", routes=("support.queue.orders.v1", "urgent")),
            record("E", reasons=("vip_customer", "low_confidence")),
            record("F", reasons=("low_confidence",)),
        ]
    )
    out = compare(live, replay)
    assert out.compared == 6 and out.live_only == 0 and out.replay_only == 0
    assert out.changed == {
        "intent": 3,
        "priority": 1,
        "sentiment": 0,
        "routes": 4,
        "escalation": 1,
        "reasons": 2,
    }
    assert out.any_changed == 6
    assert out.intent_changes == [("refund_request", "return_item", 2), ("return_item", "refund_request", 1)]
    assert out.escalated_before == 1 and out.escalated_after == 2
    assert out.newly_escalated == 1 and out.no_longer_escalated == 0
    assert abs(out.escalation_rate_before - 1 / 6) < 1e-9 and abs(out.escalation_rate_after - 2 / 6) < 1e-9
    assert out.intents["refund_request"] == (2, 1) and out.intents["return_item"] == (1, 2)
    assert out.routes["billing"] == (2, 1) and out.routes["urgent"] == (0, 1)
    assert out.reasons["low_confidence"] == (0, 2)
    assert [e.id for e in out.examples["intent"]] == ["A", "B", "C"]
    assert out.examples["escalation"][0].old == "no" and out.examples["escalation"][0].new == "yes"


def test_nothing_changes_when_the_same_decisions_come_back() -> None:
    records = [record(f"T{i}", reasons=("vip_customer",) if i % 3 == 0 else ()) for i in range(10)]
    out = compare(decisions(records), decisions(records))
    assert out.compared == 10 and out.any_changed == 0 and set(out.changed.values()) == {0}
    assert out.escalation_rate_before == out.escalation_rate_after == 0.4
    assert out.intent_changes == [] and all(v == [] for v in out.examples.values())


def test_unmatched_ids_on_either_side() -> None:
    live = decisions([record("A"), record("B")])
    replay = decisions([record("B"), record("C")])
    out = compare(live, replay)
    assert (out.compared, out.live_only, out.replay_only) == (1, 1, 1)
    assert out.live_only_ids == ["A"] and out.replay_only_ids == ["C"]


def test_duplicates_keep_the_decision_on_the_latest_input_record() -> None:
    # Live: at-least-once duplicates and a re-sent ticket (offset 7 after offset 3) with another decision.
    table = decisions(
        [
            record("A", intent="order_status", offset=3),
            record("A", intent="order_status", offset=3),
            record("A", intent="refund_request", offset=7),
            record("A", intent="shipping_delay", offset=3),  # a late duplicate of the older input
            {"id": "broken"},
        ]
    )
    assert list(table) == ["A"] and table["A"].intent == "refund_request" and table["A"].offset == 7


def test_examples_are_capped_and_redacted() -> None:
    builder = DiffBuilder(max_examples=5)
    body = f"Please refund to card {CARD} and write to {EMAIL}, thanks"
    for i in range(12):
        builder.add_live(decision_of(record(f"T{i}", intent="refund_request", offset=i)))
    calls = 0
    for i in range(12):
        value = record(f"T{i}", intent="return_item", offset=i, body=body)

        def excerpt(v: dict[str, Any] = value) -> str:
            nonlocal calls
            calls += 1
            return redacted_excerpt(v["ticket"])

        builder.add_replay(decision_of(value), excerpt)
    out = builder.report()
    assert out.changed["intent"] == 12
    assert len(out.examples["intent"]) == 5 and calls == 5  # texts are only taken for shown examples
    for example in out.examples["intent"]:
        assert example.old == "refund_request" and example.new == "return_item"
        assert CARD not in example.text and EMAIL not in example.text
        assert "[CARD_1]" in example.text and "[EMAIL_1]" in example.text
    assert out.live_models == {"default@1": 12}


def test_excerpt_is_redacted_before_it_is_cut() -> None:
    text = "x " * 70 + CARD
    cut = redacted_excerpt({"body": text}, limit=145)  # the raw text cut here would end "4111 "
    assert "4111" not in cut and len(cut) <= 145 and cut.endswith("…")
    assert redacted_excerpt({"subject": "Hi", "body": "a\n\n  b"}) == "Hi a b"
    assert redacted_excerpt({}) == ""


def test_report_dict_has_every_kind() -> None:
    out = compare(decisions([record("A")]), decisions([record("A", intent="bug_report")])).to_dict()
    assert set(out["changed"]) == set(KINDS)
    assert out["intent_changes"] == [{"old": "order_status", "new": "bug_report", "count": 1}]
    assert out["escalation"]["rate_before"] == 0.0
