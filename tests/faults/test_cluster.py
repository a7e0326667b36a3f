"""A three-broker cluster loses the leader of the busiest partitions, then a second broker, mid-stream.

The cluster is the test's own (``cluster_factory``: three KRaft nodes, each broker and controller, from the
same jars; free ports, a temporary data dir). Topics have 3 replicas and ``min.insync.replicas=2``,
the worker produces with acks=all, so an acknowledged output is on two brokers. ``STREAMER_FAULTS_CLUSTER_N``
tickets (default 6,000) go in first; one worker works through them while:

1. once a fifth is out, the broker leading the input partitions with the most records left is SIGKILLed
   (the stream goes on: the two others take over its partitions);
2. once 45 % is out, the busiest leader of the two left is SIGKILLed too: one broker is left, the
   controller quorum and the in-sync minimum are lost, nothing can be acknowledged;
3. after ``STREAMER_FAULTS_CLUSTER_DOWN_S`` seconds (default 8) both are started again.

Nobody touches the worker. Every input must come out (0 lost); duplicates are counted and bounded.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from harness.fixtures import TopicFactory, WorkerFactory
from harness.processes import wait_until

from streamer.demo import demo_tickets
from streamer.kafka import local
from streamer.kafka.admin import describe

from .conftest import DEADLETTER, ENRICHED, FAUST_ENV, TICKETS, WORKER_ENV, Tally, env_int, max_gap_s, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(1200)]

MAX_BATCH = 64
COMMIT_INTERVAL_S = 1.0  # streamer.app: broker_commit_interval
LOUD = ("warning", "error", "critical")


@dataclass
class Kill:
    node: int
    led: list[int]  # input partitions it led
    left: int  # records of the input topic not yet committed on them
    out: int  # inputs with an output when it was killed
    at: float


async def busiest_leader(bootstrap: str, topic: str, group: str, alive: set[int]) -> tuple[int, list[int], int]:
    """The live node leading the input partitions with the most records not yet committed by ``group``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        [meta] = await admin.describe_topics([topic])
        leaders = {p["partition"]: p["leader"] for p in meta["partitions"]}
        committed = await admin.list_consumer_group_offsets(group)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in leaders])
    finally:
        await consumer.stop()
        await admin.close()
    left: dict[int, int] = {}
    led: dict[int, list[int]] = {}
    for partition, leader in leaders.items():
        if leader not in alive:
            continue
        tp = TopicPartition(topic, partition)
        done = committed[tp].offset if tp in committed else 0
        left[leader] = left.get(leader, 0) + max(ends[tp] - done, 0)
        led.setdefault(leader, []).append(partition)
    node = max(left, key=lambda n: (left[n], n))
    return node, sorted(led[node]), left[node]


def test_leader_then_a_second_broker_killed_mid_stream_nothing_lost(
    cluster_factory: Callable[..., local.LocalCluster],
    topic_factory: TopicFactory,
    worker_factory: WorkerFactory,
    rng: random.Random,
) -> None:
    n = env_int("CLUSTER_N", 6000)
    down_s = env_int("CLUSTER_DOWN_S", 8)
    three_brokers = cluster_factory(3)
    root = three_brokers.data_dir
    bootstrap = three_brokers.bootstrap_servers
    run = uuid.uuid4().hex[:6]
    cluster = topic_factory(
        label="faults.cluster", bootstrap=bootstrap, topic_replication_factor=3, topic_min_insync_replicas=2
    )
    settings = cluster.settings

    async def topic_states() -> dict[str, tuple[int, str | None]]:
        from streamer.kafka.clients import admin_client

        async with admin_client(settings) as admin:
            states = await describe(admin, [cluster.topic(t) for t in (TICKETS, ENRICHED, DEADLETTER)])
        return {name: (s.replication_factor, s.config.get("min.insync.replicas")) for name, s in states.items()}

    # Every broker applies a new topic's config from the metadata log: the one asked may not have it yet.
    wait_until(lambda: set(asyncio.run(topic_states()).values()) == {(3, "2")}, 30, "the topics' replication config")

    records = []
    for i, ticket in enumerate(demo_tickets(n, seed=rng.randrange(1 << 30))):
        ticket["id"] = f"{ticket['id']}-{run}-{i}"
        records.append((ticket["id"].encode(), orjson.dumps(ticket)))
    expected = {key for key, _ in records}
    cluster.produce(TICKETS, records)
    group = f"faults-cluster-{run}"
    env = {**FAUST_ENV, **WORKER_ENV, "STREAMER_MAX_BATCH": str(MAX_BATCH)}
    worker = worker_factory(cluster, name="cluster", group=group, env=env, start=False)
    alive = {1, 2, 3}
    kills: list[Kill] = []
    with Tally(cluster, [ENRICHED, DEADLETTER]) as tally:
        started = time.monotonic()
        worker.start()
        for fraction in (0.2, 0.45):
            target = int(fraction * n)
            tally.wait(lambda t=target: tally.covered(expected) >= t, 600, alive=[worker], what=f"{target} inputs")
            time.sleep(rng.uniform(0.0, 1.0))
            node, led, left = asyncio.run(busiest_leader(bootstrap, cluster.topic(TICKETS), group, alive))
            local.stop_node(root, node, kill=True)
            alive.discard(node)
            kills.append(Kill(node, led, left, tally.covered(expected), time.time()))
        out_when_both_down = tally.covered(expected)
        time.sleep(down_s)
        out_after_down = tally.covered(expected)
        assert worker.alive, f"worker exited with two brokers down:\n{worker.log_tail()}"
        restart_began = time.time()
        restarts, back = [], []
        for k in kills:
            restarts.append(local.start_node(root, k.node, timeout=180))
            back.append(time.time())
        back_at = back[0]  # two of three voters again: a quorum, and two in-sync replicas
        tally.wait(lambda: tally.covered(expected) == n, 900, alive=[worker], what=f"all {n} inputs")
        elapsed = time.monotonic() - started
        time.sleep(2.0)
        code = worker.terminate()
        enriched, stamps, _ = tally.snapshot(ENRICHED)
        dead, _, _ = tally.snapshot(DEADLETTER)
        duplicate_stamps = tally.duplicate_stamps(ENRICHED)

    def pause_after(at_s: float) -> float:
        """From the last output before ``at_s`` to the first one after it."""
        at_ms = at_s * 1000
        before = max((t for t in stamps if t <= at_ms), default=at_ms)
        after = min((t for t in stamps if t > at_ms), default=at_ms)
        return (after - before) / 1000

    lost = expected - set(enriched)
    duplicates = sum(c - 1 for c in enriched.values())
    rate = n / elapsed
    # Per broker event (two kills, one return): a retried batch, the one in the model (2 x max_batch), and
    # what was acknowledged since the last commit (the commit interval at the measured rate, x2).
    events = 3
    bound = events * (2 * MAX_BATCH + int(2 * COMMIT_INTERVAL_S * rate) + 1)
    first_back = min((t for t in stamps if t > back_at * 1000), default=back_at * 1000) / 1000
    report(
        "three brokers: leader killed, then a second broker, then both back",
        {
            "inputs": f"{n}; topics: 3 replicas, min.insync.replicas 2; worker acks=all",
            "kill 1 (SIGKILL)": (
                f"node {kills[0].node}, leader of input partitions {kills[0].led} ({kills[0].left} records left), "
                f"{kills[0].out} out; output pause {pause_after(kills[0].at):.1f} s"
            ),
            "kill 2 (SIGKILL)": (
                f"node {kills[1].node}, leader of input partitions {kills[1].led} ({kills[1].left} records left), "
                f"{kills[1].out} out"
            ),
            "with one broker left": f"{out_after_down - out_when_both_down} more inputs out in {down_s} s",
            "started again": (
                f"node {kills[0].node} in {restarts[0].startup_s:.1f} s, then node {kills[1].node} in "
                f"{restarts[1].startup_s:.1f} s; first output {first_back - back_at:.1f} s after the first was back"
                f" (output pause {pause_after(restart_began):.1f} s from the last output before)"
            ),
            "lost": len(lost),
            "duplicates": f"{duplicates} (bound {bound}); produced at {_spread(duplicate_stamps, kills, back_at)}",
            "dead letters": len(dead),
            "longest output pause": f"{max_gap_s(stamps):.1f} s",
            "elapsed": f"{elapsed:.0f} s ({rate:.0f} inputs/s with the faults)",
            "worker log lines (warning and above)": sum(
                1 for line in worker.log_text().splitlines() if any(f'"level": "{x}"' in line for x in LOUD)
            ),
            "worker starts": worker.starts,
            "worker exit (SIGTERM at end)": code,
        },
    )
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:5]}"
    assert not dead
    assert duplicates <= bound
    assert worker.starts == 1
    assert code == 0


def _spread(stamps_ms: list[int], kills: list[Kill], back_at: float) -> str:
    """How many duplicates were produced after each event (before the next one)."""
    edges = [k.at for k in kills] + [back_at]
    names = [f"after kill {i + 1}" for i in range(len(kills))] + ["after the restart"]
    counts = dict.fromkeys(names, 0)
    before = 0
    for ms in stamps_ms:
        index = sum(1 for edge in edges if ms / 1000 >= edge) - 1
        if index < 0:
            before += 1
        else:
            counts[names[index]] += 1
    parts = [f"{k} {v}" for k, v in counts.items()]
    return ", ".join(([f"before any fault {before}"] if before else []) + parts)
