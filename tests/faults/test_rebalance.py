"""Two workers in one group; one stops (SIGTERM) and starts again mid-stream: 0 lost, a short pause.

``STREAMER_FAULTS_REBALANCE_N`` tickets (default 4,000) wait in the input topic (6 partitions); workers A
and B of one group share them. Once 30 % are out, B gets SIGTERM: it finishes its batches, commits and
leaves the group (exit 0), A takes all partitions. When 60 % are out B starts again and the group
rebalances once more. What is measured: the longest pause in the enriched topic (gap between output
timestamps, all partitions together) and the duplicates (a clean leave commits first, so few or none).
"""

from __future__ import annotations

import random
import time
import uuid

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory

from streamer.demo import demo_tickets

from .conftest import DEADLETTER, ENRICHED, FAUST_ENV, TICKETS, WORKER_ENV, Tally, env_int, max_gap_s, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(900)]

PAUSE_LIMIT_S = 60.0


def test_one_of_two_workers_leaves_and_rejoins_nothing_lost(
    topic_factory: TopicFactory, worker_factory: WorkerFactory, rng: random.Random
) -> None:
    n = env_int("REBALANCE_N", 4000)
    cluster = topic_factory(label="faults.rebalance")
    run = uuid.uuid4().hex[:6]
    records = []
    for i, ticket in enumerate(demo_tickets(n, seed=rng.randrange(1 << 30))):
        ticket["id"] = f"{ticket['id']}-{run}-{i}"
        records.append((ticket["id"].encode(), orjson.dumps(ticket)))
    expected = {key for key, _ in records}
    cluster.produce(TICKETS, records)

    group = f"faults-rebalance-{run}"
    env = {**FAUST_ENV, **WORKER_ENV}
    a = worker_factory(cluster, name="a", group=group, env=env, start=False)
    b = worker_factory(cluster, name="b", group=group, env=env, start=False)
    with Tally(cluster, [ENRICHED, DEADLETTER]) as tally:
        a.start()
        b.start()
        tally.wait(lambda: tally.covered(expected) >= 0.3 * n, 600, alive=[a, b], what="30 % of the stream")
        stopping = time.time()
        b_code = b.terminate()
        b_stop_s = time.time() - stopping
        tally.wait(lambda: tally.covered(expected) >= 0.6 * n, 600, alive=[a], what="60 % of the stream")
        rejoin = time.time()
        b.start()
        tally.wait(lambda: tally.covered(expected) == n, 900, alive=[a, b], what=f"all {n} inputs")
        time.sleep(2.0)
        codes = (a.terminate(), b.terminate())
        enriched, timestamps, _ = tally.snapshot(ENRICHED)
        dead, _, _ = tally.snapshot(DEADLETTER)
        dup_stamps = tally.duplicate_stamps(ENRICHED)

    lost = expected - set(enriched)
    duplicates = sum(c - 1 for c in enriched.values())
    leave_ms, rejoin_ms = int(stopping * 1000), int(rejoin * 1000)
    around_leave = [t for t in timestamps if leave_ms - 5000 <= t < rejoin_ms]
    around_rejoin = [t for t in timestamps if t >= rejoin_ms - 5000]
    pause = max_gap_s(timestamps)
    report(
        "rebalance: one of two workers stops and starts",
        {
            "inputs": n,
            "lost": len(lost),
            "duplicates": f"{duplicates} ({sum(1 for t in dup_stamps if leave_ms <= t < rejoin_ms)} after B left, "
            f"{sum(1 for t in dup_stamps if t >= rejoin_ms)} after B rejoined)",
            "B's SIGTERM": f"exit {b_code} in {b_stop_s:.1f} s",
            "longest output pause": f"{pause:.1f} s (whole run, limit {PAUSE_LIMIT_S:.0f} s)",
            "pause when B left": f"{max_gap_s(around_leave):.1f} s",
            "pause when B rejoined": f"{max_gap_s(around_rejoin):.1f} s",
            "exits at the end (A, B)": codes,
        },
    )
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:5]}"
    assert not dead
    assert b_code == 0
    assert codes == (0, 0)
    assert pause <= PAUSE_LIMIT_S
