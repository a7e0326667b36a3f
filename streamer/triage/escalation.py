"""The escalation policy: which tickets the small models should not decide alone, and why.

Each reason is a stable code (the ``reason`` enum of the schemas) plus a human detail, so the large-model
side and dashboards can count and act on reasons separately.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from enum import Enum


class ReasonCode(str, Enum):
    LOW_CONFIDENCE = "low_confidence"
    OUT_OF_SCOPE = "out_of_scope"
    SMALL_MARGIN = "small_margin"
    URGENT_NEGATIVE = "urgent_negative"
    VIP_CUSTOMER = "vip_customer"
    LONG_MULTI_ISSUE = "long_multi_issue"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    NEW_ERROR_TEMPLATE = "new_error_template"
    ERROR_BURST = "error_burst"


#: Reasons that come from the intent model's own doubt: what an escalation budget spends.
MODEL_REASONS = frozenset({ReasonCode.LOW_CONFIDENCE, ReasonCode.OUT_OF_SCOPE, ReasonCode.SMALL_MARGIN})


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """Thresholds of the policy; defaults come from settings, a bundle may supply calibrated ones.

    With ``score_threshold`` (a bundle's escalation budget) a ticket escalates when its escalation score
    reaches it, as out of scope when its out-of-scope score also reaches ``oos_threshold``, else as low
    confidence; ``oos_rule`` then says whether the out-of-scope score alone escalates as well.
    """

    min_confidence: float = 0.55
    min_margin: float = 0.10
    oos_threshold: float = 0.5
    score_threshold: float | None = None
    budget: float | None = None
    oos_rule: bool = True
    long_text_chars: int = 1200
    min_issues: int = 2
    vip_tiers: frozenset[str] = frozenset({"vip"})
    supported_languages: frozenset[str] = frozenset({"en"})
    language_min_confidence: float = 0.8
    urgent_priorities: frozenset[str] = frozenset({"urgent", "high"})
    negative_sentiments: frozenset[str] = frozenset({"negative"})


@dataclass(frozen=True, slots=True)
class TicketSignals:
    """What the policy looks at for one ticket, gathered by the triage core."""

    intent: str
    confidence: float
    margin: float
    oos_score: float
    priority: str
    sentiment: str
    tier: str | None
    language: str
    language_confidence: float
    text: str
    escalation_score: float | None = None


# Markers of a second (third...) issue in one message: connectors and enumerations people use.
_ISSUE_MARKERS = re.compile(
    r"(?im)\b(?:also|additionally|another (?:issue|problem|thing|question)|on top of (?:that|this)|"
    r"in addition|secondly|second(?:ly)?,|third(?:ly)?|one more thing|separately|besides that|"
    r"and (?:then|now) (?:my|the|i))\b|^\s*(?:\d+[.)]|[-*\u2022])\s+"
)


def count_issues(text: str) -> int:
    """A cheap estimate of how many separate problems a message raises (1 plus markers of others)."""
    return 1 + len(_ISSUE_MARKERS.findall(text))


def ticket_reasons(s: TicketSignals, policy: EscalationPolicy) -> list[Reason]:
    """Every reason that applies, in a fixed order; an empty list means the small models decide."""
    reasons: list[Reason] = []
    threshold = policy.score_threshold
    if threshold is not None and s.escalation_score is not None and s.escalation_score >= threshold:
        code = ReasonCode.OUT_OF_SCOPE if s.oos_score >= policy.oos_threshold else ReasonCode.LOW_CONFIDENCE
        budget = "" if policy.budget is None else f" (budget {policy.budget:.0%})"
        reasons.append(Reason(code, f"escalation score {s.escalation_score:.2f} >= {threshold:.2f}{budget}"))
    if policy.oos_rule and s.oos_score >= policy.oos_threshold and not reasons:
        reasons.append(
            Reason(ReasonCode.OUT_OF_SCOPE, f"out-of-scope score {s.oos_score:.2f} >= {policy.oos_threshold:.2f}")
        )
    if s.confidence < policy.min_confidence:
        reasons.append(
            Reason(
                ReasonCode.LOW_CONFIDENCE,
                f"intent {s.intent} confidence {s.confidence:.2f} < {policy.min_confidence:.2f}",
            )
        )
    if s.margin < policy.min_margin:
        reasons.append(Reason(ReasonCode.SMALL_MARGIN, f"top-2 intent margin {s.margin:.2f} < {policy.min_margin:.2f}"))
    if s.priority in policy.urgent_priorities and s.sentiment in policy.negative_sentiments:
        reasons.append(Reason(ReasonCode.URGENT_NEGATIVE, f"priority {s.priority} with {s.sentiment} sentiment"))
    if s.tier is not None and s.tier in policy.vip_tiers:
        reasons.append(Reason(ReasonCode.VIP_CUSTOMER, f"customer tier {s.tier}"))
    if len(s.text) > policy.long_text_chars:
        issues = count_issues(s.text)
        if issues >= policy.min_issues:
            reasons.append(
                Reason(ReasonCode.LONG_MULTI_ISSUE, f"{len(s.text)} characters raising about {issues} issues")
            )
    if (
        s.language not in policy.supported_languages
        and s.language != "und"
        and s.language_confidence >= policy.language_min_confidence
    ):
        reasons.append(
            Reason(
                ReasonCode.UNSUPPORTED_LANGUAGE,
                f"language {s.language} ({s.language_confidence:.2f}) not in {sorted(policy.supported_languages)}",
            )
        )
    return reasons


def policy_from(
    *,
    min_confidence: float,
    min_margin: float,
    oos_threshold: float,
    long_text_chars: int,
    vip_tiers: Collection[str],
    supported_languages: Collection[str],
    score_threshold: float | None = None,
    budget: float | None = None,
    oos_rule: bool = True,
) -> EscalationPolicy:
    """A policy from plain values (settings, bundle thresholds), normalising the sets."""
    return EscalationPolicy(
        min_confidence=min_confidence,
        min_margin=min_margin,
        oos_threshold=oos_threshold,
        long_text_chars=long_text_chars,
        vip_tiers=frozenset(t.lower() for t in vip_tiers),
        supported_languages=frozenset(lang.lower() for lang in supported_languages),
        score_threshold=score_threshold,
        budget=budget,
        oos_rule=oos_rule,
    )


class BudgetSpender:
    """Spends the escalation budget that traffic calmer than the calibration split leaves unused.

    A budget is chosen on the calibration split, but live traffic rarely matches it: on easier traffic the
    calibrated threshold escalates far less than the budget the user pays for, and the kept tickets the
    large model could have checked are the least sure ones. The threshold therefore follows the score that
    escalates ``budget`` of the last ``window`` tickets, but only downwards: never above the calibrated
    ``ceiling`` (harder traffic, an incident or unknown intents, escalates as calibrated, over budget, and the
    rate alert says so) and never below ``floor`` (what calibration escalates at a larger share), so it spends
    a budget, not on texts the bundle is sure of. Until ``warmup`` scores are seen the ceiling holds.
    Updated once per batch, so a batch is judged by one threshold.
    """

    def __init__(self, budget: float, ceiling: float, floor: float, window: int, warmup: int | None = None) -> None:
        if not 0.0 < budget < 1.0:
            raise ValueError(f"an escalation budget is a share in (0, 1), got {budget}")
        if window < 1:
            raise ValueError(f"the spending window needs at least one ticket, got {window}")
        self.budget = budget
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.warmup = max(1, window // 8) if warmup is None else warmup
        self.window = window
        self._scores: deque[float] = deque(maxlen=window)
        self._threshold = ceiling

    @property
    def threshold(self) -> float:
        """The score threshold the next batch is judged by."""
        return self._threshold

    def observe(self, scores: Iterable[float]) -> None:
        """Add a judged batch's escalation scores and move the threshold for the next one."""
        self._scores.extend(scores)
        if len(self._scores) < self.warmup:
            return
        ranked = sorted(self._scores, reverse=True)
        # the score of the last ticket within the budget: at or above it, ``budget`` of the window escalates
        spend = ranked[max(0, math.ceil(self.budget * len(ranked)) - 1)]
        self._threshold = min(self.ceiling, max(self.floor, spend))

    def policy(self, policy: EscalationPolicy) -> EscalationPolicy:
        """``policy`` with the threshold the next batch is judged by."""
        return replace(policy, score_threshold=self._threshold)
