"""Each escalation reason fires on its own condition and only then."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamer.triage.escalation import EscalationPolicy, ReasonCode, TicketSignals, count_issues, ticket_reasons

POLICY = EscalationPolicy(min_confidence=0.6, min_margin=0.1, oos_threshold=0.5, long_text_chars=200)
CALM = TicketSignals(
    intent="refund_request",
    confidence=0.95,
    margin=0.9,
    oos_score=0.1,
    priority="normal",
    sentiment="neutral",
    tier="pro",
    language="en",
    language_confidence=0.99,
    text="I would like a refund for my last order please.",
)


def codes(signals: TicketSignals) -> list[ReasonCode]:
    return [r.code for r in ticket_reasons(signals, POLICY)]


def test_confident_routine_ticket_stays_with_the_small_model() -> None:
    assert codes(CALM) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"confidence": 0.59}, ReasonCode.LOW_CONFIDENCE),
        ({"margin": 0.05}, ReasonCode.SMALL_MARGIN),
        ({"oos_score": 0.5}, ReasonCode.OUT_OF_SCOPE),
        ({"priority": "urgent", "sentiment": "negative"}, ReasonCode.URGENT_NEGATIVE),
        ({"priority": "high", "sentiment": "negative"}, ReasonCode.URGENT_NEGATIVE),
        ({"tier": "vip"}, ReasonCode.VIP_CUSTOMER),
        ({"language": "de", "language_confidence": 0.97}, ReasonCode.UNSUPPORTED_LANGUAGE),
        (
            {"text": "My card was charged twice. " * 8 + "Also, the app crashes when I log in. " * 2},
            ReasonCode.LONG_MULTI_ISSUE,
        ),
    ],
)
def test_each_reason(change: dict, expected: ReasonCode) -> None:
    assert codes(replace(CALM, **change)) == [expected]


@pytest.mark.parametrize(
    "change",
    [
        {"confidence": 0.6},
        {"margin": 0.1},
        {"priority": "urgent", "sentiment": "neutral"},
        {"priority": "low", "sentiment": "negative"},
        {"tier": None},
        {"language": "de", "language_confidence": 0.5},
        {"language": "und", "language_confidence": 1.0},
        {"text": "My card was charged twice and I am not happy about it at all. " * 6},
    ],
)
def test_near_misses_do_not_escalate(change: dict) -> None:
    assert codes(replace(CALM, **change)) == []


def test_reasons_accumulate_with_details() -> None:
    reasons = ticket_reasons(replace(CALM, confidence=0.3, margin=0.01, tier="vip"), POLICY)
    assert [r.code for r in reasons] == [
        ReasonCode.LOW_CONFIDENCE,
        ReasonCode.SMALL_MARGIN,
        ReasonCode.VIP_CUSTOMER,
    ]
    assert "0.30 < 0.60" in reasons[0].detail
    assert reasons[2].to_dict() == {"code": "vip_customer", "detail": "customer tier vip"}


def test_count_issues() -> None:
    assert count_issues("The app crashes.") == 1
    assert count_issues("The app crashes. Also my invoice is wrong.") == 2
    assert count_issues("Problems:\n1. login fails\n2. invoice wrong\n3. slow") == 4


def test_budget_escalates_on_the_score_alone_and_names_out_of_scope() -> None:
    budget = EscalationPolicy(
        min_confidence=0.0, min_margin=0.0, oos_threshold=0.5, score_threshold=0.3, budget=0.08, oos_rule=False
    )
    # low confidence and a small margin do not escalate by themselves under a budget
    unsure = replace(CALM, confidence=0.2, margin=0.01, escalation_score=0.29)
    assert ticket_reasons(unsure, budget) == []
    reasons = ticket_reasons(replace(unsure, escalation_score=0.3), budget)
    assert [r.code for r in reasons] == [ReasonCode.LOW_CONFIDENCE] and "budget 8%" in reasons[0].detail
    far = replace(CALM, oos_score=0.7, escalation_score=0.9)
    assert [r.code for r in ticket_reasons(far, budget)] == [ReasonCode.OUT_OF_SCOPE]
    # far but scored safe: only the out-of-scope rule, when a setting turns it on, escalates it
    far_safe = replace(far, escalation_score=0.1)
    assert ticket_reasons(far_safe, budget) == []
    assert [r.code for r in ticket_reasons(far_safe, replace(budget, oos_rule=True))] == [ReasonCode.OUT_OF_SCOPE]
    # a head without a score falls back to the fixed cut-offs
    assert ReasonCode.LOW_CONFIDENCE in [r.code for r in ticket_reasons(replace(unsure, escalation_score=None), POLICY)]
