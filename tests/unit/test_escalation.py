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
