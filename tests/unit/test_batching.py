"""The adaptive batch planner with a fake clock: sizes follow the backlog and the token budget, pausing has
hysteresis, order is kept."""

from __future__ import annotations

import random
import statistics

import pytest

from streamer.batching import BatchPlanner, BatchPolicy, estimate_tokens


def planner(**policy: float) -> BatchPlanner[int, int]:
    return BatchPlanner(BatchPolicy(**policy))  # type: ignore[arg-type]


def test_thin_traffic_goes_at_once_in_batches_of_what_is_there() -> None:
    p = planner(max_batch_tokens=1000)
    p.add(1, 20, 0, now=0.0)
    batch = p.take(now=0.0)
    assert batch.items == [1] and batch.tokens == 20 and len(p) == 0
    for i in range(3):
        p.add(10 + i, 20, 0, now=1.0)
    assert p.take(now=1.0).items == [10, 11, 12]


def test_backlog_fills_the_token_budget_not_a_record_count() -> None:
    p = planner(max_batch_tokens=1000)
    for i in range(100):
        p.add(i, 30, i % 3, now=0.0)
    sizes = []
    while len(p):
        batch = p.take(now=0.0)
        assert batch.tokens <= 1000
        sizes.append(len(batch.items))
    assert sizes == [33, 33, 33, 1]

    long_, short = planner(max_batch_tokens=1000), planner(max_batch_tokens=1000)
    for i in range(50):
        long_.add(i, 200, 0, now=0.0)
        short.add(i, 10, 0, now=0.0)
    assert len(long_.take(0.0).items) == 5
    assert len(short.take(0.0).items) == 50


def test_a_record_longer_than_the_budget_goes_alone() -> None:
    p = planner(max_batch_tokens=100)
    p.add(1, 500, 0, now=0.0)
    p.add(2, 10, 0, now=0.0)
    assert p.take(0.0).items == [1]
    assert p.take(0.0).items == [2]


def test_latency_target_bounds_batches_while_keeping_up_and_backlog_takes_the_full_budget() -> None:
    p = planner(max_batch_tokens=10_000, latency_target_s=0.1)
    p.observe(1000, 0.1)  # the model does 10,000 tokens/s
    assert p.tokens_per_s == pytest.approx(10_000)
    for i in range(200):
        p.add(i, 20, 0, now=0.0)
    # Keeping up (oldest record 20 ms old): a batch the model finishes within the 100 ms target.
    assert p.budget(now=0.02) == 1000
    assert len(p.take(now=0.02).items) == 50
    # Oldest now older than the target: the batcher is behind, so it takes the whole budget.
    assert p.budget(now=0.5) == 10_000
    assert len(p.take(now=0.5).items) == 150


def test_records_that_waited_in_the_topic_count_as_late_from_the_start() -> None:
    p = planner(max_batch_tokens=10_000, latency_target_s=0.1)
    p.observe(1000, 0.1)
    for i in range(200):
        p.add(i, 20, 0, now=100.0, since=99.0)  # produced a second ago: a backlog, not fresh traffic
    assert len(p.take(now=100.0).items) == 200
    fresh = planner(max_batch_tokens=10_000, latency_target_s=0.1)
    fresh.observe(1000, 0.1)
    for i in range(200):
        fresh.add(i, 20, 0, now=100.0, since=100.5)  # a producer clock ahead of ours: counted from now
    assert len(fresh.take(now=100.0).items) == 50  # keeping up: 100 ms of model work


def test_marks_hold_enough_work_to_cover_the_refetch() -> None:
    p = planner(max_batch_tokens=100, refill_s=1.5)
    assert (p.resume_below, p.pause_above) == (100, 200)
    p.observe(1000, 1.0)  # 1,000 tokens/s: a resumed fetch may take 1.5 s, so resume below 1,500
    assert (p.resume_below, p.pause_above) == (1500, 3000)
    for i in range(20):
        assert p.add(i, 100, 0, now=0) == frozenset()  # 2,000 buffered: still fetching
    assert p.add(20, 1100, 1, now=0) == {0, 1}


def test_no_batch_is_predicted_to_outlast_the_poll_interval_bound() -> None:
    p = planner(max_batch_tokens=100_000, max_batch_s=2.0)
    p.observe(100, 1.0)  # a slow machine: 100 tokens/s
    for i in range(1000):
        p.add(i, 10, 0, now=0.0)
    batch = p.take(now=60.0)
    assert batch.tokens <= 200 and len(batch.items) == 20


def test_speed_estimate_is_smoothed() -> None:
    p = planner(cost_smoothing=0.5)
    p.observe(1000, 1.0)
    p.observe(3000, 1.0)
    assert p.tokens_per_s == pytest.approx(2000)
    p.observe(0, 1.0)  # nothing to learn from
    assert p.tokens_per_s == pytest.approx(2000)


def test_pause_above_twice_the_budget_resume_below_once() -> None:
    p = planner(max_batch_tokens=100)  # pause above 200 buffered tokens, resume below 100
    assert p.add(1, 60, 0, now=0) == frozenset()
    assert p.add(2, 60, 1, now=0) == frozenset()
    assert p.add(3, 60, 0, now=0) == frozenset()  # 180: still below
    assert p.add(4, 60, 2, now=0) == {0, 1, 2}  # 240: every partition holding records pauses
    assert p.paused == {0, 1, 2}
    assert p.add(5, 10, 3, now=0) == {3}  # a record still arriving from elsewhere: pause its partition too
    taken = [p.take(now=0) for _ in range(2)]  # 60 each (two would exceed the budget): 250 -> 190 -> 130
    assert [b.items for b in taken] == [[1], [2]] and all(b.resume == frozenset() for b in taken)
    assert p.paused == {0, 1, 2, 3}  # between the marks: still paused
    third = p.take(now=0)  # 130 -> 70: below the low mark, everything resumes
    assert third.items == [3] and third.resume == {0, 1, 2, 3}
    assert p.paused == frozenset()


def pause_transitions(resume_ratio: float, steps: int = 3000) -> int:
    """Records arrive only from unpaused partitions; the model takes a budget every third step, about
    what arrives. Counts the pauses and resumes the planner asks for."""
    p = planner(max_batch_tokens=100, resume_ratio=resume_ratio)
    rng = random.Random(3)
    transitions = 0
    for step in range(steps):
        part = step % 4
        if part not in p.paused:
            before = len(p.paused)
            p.add(step, rng.randint(20, 40), part, now=step)
            transitions += before == 0 and len(p.paused) > 0
        if step % 3 == 0 and len(p):
            transitions += bool(p.take(now=step).resume)
    return transitions


def test_hysteresis_keeps_pauses_rare() -> None:
    with_hysteresis, without = pause_transitions(1.0), pause_transitions(1.95)
    assert 0 < with_hysteresis < without / 3


def test_order_is_arrival_order_so_each_partition_keeps_its_order() -> None:
    p = planner(max_batch_tokens=50)
    rng = random.Random(7)
    sent = [(rng.randrange(4), i) for i in range(300)]
    for part, i in sent:
        p.add(i, rng.randint(1, 30), part, now=0)
    out: list[int] = []
    while len(p):
        out.extend(p.take(now=0).items)
    assert out == [i for _, i in sent]


def test_clear_drops_everything_and_forgets_pauses() -> None:
    p = planner(max_batch_tokens=10)
    for i in range(10):
        p.add(i, 5, i % 2, now=0)
    assert p.paused
    assert p.clear() == list(range(10))
    assert len(p) == 0 and p.buffered_tokens == 0 and p.paused == frozenset()
    assert p.add(99, 5, 0, now=1) == frozenset()


def test_policy_needs_hysteresis() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(pause_ratio=1.0, resume_ratio=1.0)
    with pytest.raises(ValueError):
        BatchPolicy(max_batch_tokens=0)


def test_token_estimate() -> None:
    assert estimate_tokens(0, max_tokens=256) == 2
    assert estimate_tokens(40, max_tokens=256) == 12
    assert estimate_tokens(1_000_000, max_tokens=256) == 256


def simulate(load: float, *, seconds: float = 60.0, seed: int = 0) -> tuple[float, float, float]:
    """A model taking 5 ms + 1 ms per 10 tokens per batch, Poisson arrivals of 10-80 token records at
    ``load`` of its large-batch capacity; the planner decides every batch. Returns (mean batch size,
    p99 latency, served share)."""
    policy = BatchPolicy(max_batch_tokens=2000, latency_target_s=0.1)
    p: BatchPlanner[float, int] = BatchPlanner(policy)
    rng = random.Random(seed)
    mean_tokens = 45.0
    capacity = 1 / (0.0001 * mean_tokens + 0.005 * mean_tokens / 2000)  # records/s at full batches
    rate = load * capacity
    arrivals = []
    t = 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        arrivals.append((t, rng.randint(10, 80)))
    now, i = 0.0, 0
    sizes, latencies = [], []
    while i < len(arrivals) or len(p):
        while i < len(arrivals) and arrivals[i][0] <= now:
            p.add(arrivals[i][0], arrivals[i][1], i % 6, now=arrivals[i][0])
            i += 1
        if not len(p):
            now = arrivals[i][0]
            continue
        batch = p.take(now)
        service = 0.005 + 0.0001 * batch.tokens
        p.observe(batch.tokens, service)
        now += service
        sizes.append(len(batch.items))
        latencies.extend(now - arrived for arrived in batch.items)
    return statistics.mean(sizes), statistics.quantiles(latencies, n=100)[98], len(latencies) / len(arrivals)


def test_batch_sizes_follow_load_and_latency_stays_low_until_near_saturation() -> None:
    results = {load: simulate(load) for load in (0.1, 0.3, 0.6, 0.9)}
    sizes = [results[load][0] for load in (0.1, 0.3, 0.6, 0.9)]
    assert sizes == sorted(sizes) and sizes[0] < 1.5 and sizes[-1] > 4 * sizes[0]
    assert all(share == 1.0 for _, _, share in results.values())
    # Thin traffic: about one record's service time (5 ms + ~4.5 ms), nothing waits for a timer.
    assert results[0.1][1] < 0.03
    assert results[0.6][1] < 0.1
