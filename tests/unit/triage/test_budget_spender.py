"""The budget spender lowers the escalation threshold to spend a budget calm traffic leaves unused, and
never raises it: harder traffic escalates as calibrated."""

from __future__ import annotations

import random

import pytest

from streamer.triage.escalation import BudgetSpender, EscalationPolicy

CEILING, FLOOR, BUDGET = 0.86, 0.70, 0.08


def spent(spender: BudgetSpender, batches: list[list[float]]) -> tuple[int, int]:
    """Escalated and judged tickets over ``batches``, each judged by the threshold before it was observed."""
    escalated = judged = 0
    for scores in batches:
        threshold = spender.threshold
        escalated += sum(score >= threshold for score in scores)
        judged += len(scores)
        spender.observe(scores)
    return escalated, judged


def stream(rng: random.Random, n_batches: int, size: int, high: float) -> list[list[float]]:
    """Scores uniform in [0, high): the share at or above a threshold t < high is (high - t) / high."""
    return [[rng.uniform(0.0, high) for _ in range(size)] for _ in range(n_batches)]


def test_calm_traffic_spends_the_budget_with_a_lower_threshold() -> None:
    rng = random.Random(3)
    spender = BudgetSpender(BUDGET, CEILING, FLOOR, window=2000)
    # at the ceiling only (1 - 0.86 / 0.9) = 4.4% would escalate: half the budget unused
    warm = stream(rng, 100, 32, 0.9)
    spent(spender, warm)
    assert FLOOR < spender.threshold < CEILING
    escalated, judged = spent(spender, stream(rng, 200, 32, 0.9))
    assert escalated / judged == pytest.approx(BUDGET, abs=0.01)


def test_hard_traffic_escalates_as_calibrated_over_budget() -> None:
    rng = random.Random(4)
    spender = BudgetSpender(BUDGET, CEILING, FLOOR, window=2000)
    spent(spender, stream(rng, 100, 32, 1.0))  # 14% reach the ceiling: an incident, unknown intents
    assert spender.threshold == CEILING
    escalated, judged = spent(spender, stream(rng, 100, 32, 1.0))
    assert escalated / judged == pytest.approx(0.14, abs=0.015)


def test_sure_traffic_never_escalates_below_the_floor() -> None:
    rng = random.Random(5)
    spender = BudgetSpender(BUDGET, CEILING, FLOOR, window=1000)
    escalated, _ = spent(spender, stream(rng, 100, 32, 0.5))  # every ticket far below the floor
    assert spender.threshold == FLOOR and escalated == 0


def test_the_ceiling_holds_until_the_window_warms_up() -> None:
    spender = BudgetSpender(BUDGET, CEILING, FLOOR, window=800)
    assert spender.warmup == 100
    spender.observe([0.75] * 90 + [0.8] * 9)
    assert spender.threshold == CEILING
    spender.observe([0.75])  # 100 scores: 8% of them is 8 tickets, all at 0.8
    assert spender.threshold == 0.8
    policy = spender.policy(EscalationPolicy(score_threshold=CEILING, budget=BUDGET))
    assert policy.score_threshold == 0.8 and policy.budget == BUDGET


def test_the_threshold_follows_the_window_back_up() -> None:
    """Once a calm spell leaves the window, the threshold returns towards the ceiling: the window forgets."""
    spender = BudgetSpender(BUDGET, CEILING, FLOOR, window=200)
    spender.observe([0.72] * 200)
    assert spender.threshold == 0.72
    spender.observe([0.99] * 20 + [0.1] * 180)  # 10% far above the ceiling
    assert spender.threshold == CEILING


@pytest.mark.parametrize("budget", [0.0, 1.0, -0.1])
def test_a_budget_is_a_share(budget: float) -> None:
    with pytest.raises(ValueError, match="share"):
        BudgetSpender(budget, CEILING, FLOOR, window=100)
