"""SIGKILL a worker and restart it at once: how long the stream stalls, without and with static membership.

A killed member says no goodbye: the group waits the session timeout (``STREAMER_KAFKA_SESSION_TIMEOUT_MS``,
45 s by default) before its partitions go anywhere, even to its own restarted process, which joins as a
stranger. With ``STREAMER_GROUP_INSTANCE_ID`` the restarted process is the same member to the group and
gets its partitions back as soon as it joins. The test runs both on one stream size with the default
session timeout (Faust's own environment variables, which the rest of the suite uses, are removed here) and
reports both stalls; each must lose nothing.
"""

from __future__ import annotations

import random
import time
import uuid

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory

from streamer.demo import demo_tickets

from .conftest import DEADLETTER, ENRICHED, TICKETS, WORKER_ENV, Tally, env_int, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(900)]

SESSION_TIMEOUT_S = 45.0  # the default of STREAMER_KAFKA_SESSION_TIMEOUT_MS


def stall_after_kill(
    topic_factory: TopicFactory,
    worker_factory: WorkerFactory,
    rng: random.Random,
    *,
    instance_id: str | None,
) -> dict[str, float]:
    """One stream, one SIGKILL at 30 % and an immediate restart; the stall and the counts."""
    n = env_int("STATIC_N", 3000)
    cluster = topic_factory(label="faults.static" if instance_id else "faults.dynamic")
    run = uuid.uuid4().hex[:6]
    records = []
    for i, ticket in enumerate(demo_tickets(n, seed=rng.randrange(1 << 30))):
        ticket["id"] = f"{ticket['id']}-{run}-{i}"
        records.append((ticket["id"].encode(), orjson.dumps(ticket)))
    expected = {key for key, _ in records}
    cluster.produce(TICKETS, records)
    # Without FAUST_ENV: the settings' session timeout, not the suite's shortcut.
    env = {**WORKER_ENV, **({"STREAMER_GROUP_INSTANCE_ID": instance_id} if instance_id else {})}
    name = "static" if instance_id else "dynamic"
    worker = worker_factory(cluster, name=name, group=f"faults-static-{run}", env=env, start=False)
    with Tally(cluster, [ENRICHED, DEADLETTER]) as tally:
        worker.start()
        tally.wait(lambda: tally.covered(expected) >= int(0.3 * n), 600, alive=[worker], what="30 % of the stream")
        time.sleep(rng.uniform(0.0, 1.0))
        worker.kill9()
        killed_ms = int(time.time() * 1000)
        worker.start()
        restarted_ms = int(time.time() * 1000)
        tally.wait(lambda: any(ts > killed_ms for ts in tally.snapshot(ENRICHED)[1]), 180, alive=[worker])
        tally.wait(lambda: tally.covered(expected) == n, 900, alive=[worker], what=f"all {n} inputs")
        time.sleep(2.0)
        code = worker.terminate()
        enriched, stamps, _ = tally.snapshot(ENRICHED)
    before = max(ts for ts in stamps if ts <= killed_ms)
    after = min(ts for ts in stamps if ts > killed_ms)
    return {
        "inputs": n,
        "lost": len(expected - set(enriched)),
        "duplicates": sum(c - 1 for c in enriched.values()),
        "stall_s": (after - before) / 1000,
        "restart_to_output_s": (after - restarted_ms) / 1000,
        "exit": code,
    }


def test_static_membership_takes_the_partitions_back_at_once(
    topic_factory: TopicFactory, worker_factory: WorkerFactory, rng: random.Random
) -> None:
    dynamic = stall_after_kill(topic_factory, worker_factory, rng, instance_id=None)
    static = stall_after_kill(topic_factory, worker_factory, rng, instance_id="worker-0")
    report(
        "SIGKILL and immediate restart, session timeout 45 s",
        {
            "without STREAMER_GROUP_INSTANCE_ID": (
                f"stall {dynamic['stall_s']:.1f} s (restart -> first output {dynamic['restart_to_output_s']:.1f} s); "
                f"lost {dynamic['lost']}, duplicates {dynamic['duplicates']}"
            ),
            "with STREAMER_GROUP_INSTANCE_ID": (
                f"stall {static['stall_s']:.1f} s (restart -> first output {static['restart_to_output_s']:.1f} s); "
                f"lost {static['lost']}, duplicates {static['duplicates']}"
            ),
        },
    )
    assert dynamic["lost"] == static["lost"] == 0
    assert dynamic["exit"] == static["exit"] == 0
    assert dynamic["stall_s"] >= 0.8 * SESSION_TIMEOUT_S  # the group waited for the dead member
    # No wait for the session timeout: the restarted process' start-up (imports, the model, Faust) and a join.
    assert static["restart_to_output_s"] < 0.6 * SESSION_TIMEOUT_S
    assert static["stall_s"] < dynamic["stall_s"] - 0.4 * SESSION_TIMEOUT_S
