"""SIGKILL the worker at random points of a long stream, restart it each time: nothing is lost.

N tickets (``STREAMER_FAULTS_CRASH_N``, default 50,000; 1 in 100 malformed) go in first; one worker
process of a fresh group works through them and is killed with SIGKILL ``STREAMER_FAULTS_CRASH_KILLS``
times (default 5) at random points (a random fraction of the stream plus a random fraction of a
second), restarted at once each time. At the end every input key is in the enriched topic (good tickets)
or the dead-letter topic (malformed ones): 0 lost. Duplicates are counted: they may only come from what
was in flight at a kill (outputs acknowledged but offsets not yet committed: Faust commits every
``broker_commit_interval`` = 1 s, plus the batches in flight).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory

from streamer.demo import demo_tickets

from .conftest import DEADLETTER, ENRICHED, FAUST_ENV, TICKETS, WORKER_ENV, Tally, env_int, max_gap_s, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(1200)]

MAX_BATCH = 64
COMMIT_INTERVAL_S = 1.0  # streamer.app: broker_commit_interval


def malformed(rng: random.Random, key: str) -> bytes:
    """A record that must be dead-lettered: truncated JSON or a schema violation."""
    doc = {"id": key, "created_at": "2026-11-28T09:00:00Z", "body": "my order never arrived"}
    kind = rng.randrange(3)
    if kind == 0:
        raw = orjson.dumps(doc)
        return raw[: rng.randrange(1, len(raw) - 1)]
    if kind == 1:
        return orjson.dumps({**doc, "body": rng.choice([42, None, [], {"x": 1}])})
    return orjson.dumps({k: v for k, v in doc.items() if k != "created_at"})


def test_sigkill_five_times_loses_nothing(
    topic_factory: TopicFactory, worker_factory: WorkerFactory, rng: random.Random
) -> None:
    n = env_int("CRASH_N", 50_000)
    kills = env_int("CRASH_KILLS", 5)
    cluster = topic_factory(label="faults.crash")
    run = uuid.uuid4().hex[:6]

    records: list[tuple[bytes, bytes]] = []
    good: set[bytes] = set()
    bad: set[bytes] = set()
    for i, ticket in enumerate(demo_tickets(n, seed=rng.randrange(1 << 30))):
        if i % 100 == 99:
            key = f"BAD-{run}-{i}"
            records.append((key.encode(), malformed(rng, key)))
            bad.add(key.encode())
        else:
            ticket["id"] = f"{ticket['id']}-{run}-{i}"
            records.append((ticket["id"].encode(), orjson.dumps(ticket)))
            good.add(ticket["id"].encode())
    expected = good | bad
    assert len(expected) == n
    began = time.monotonic()
    cluster.produce(TICKETS, records)
    produce_s = time.monotonic() - began
    del records

    worker = worker_factory(
        cluster,
        name="crash",
        group=f"faults-crash-{run}",
        env={**FAUST_ENV, **WORKER_ENV, "STREAMER_MAX_BATCH": str(MAX_BATCH)},
        start=False,
    )
    # Where to kill: mostly at a random point of the stream (a fraction of it out, then a random fraction
    # of a second: model, send, acknowledgement or commit), sometimes a few seconds after a (re)start
    # (loading the model, joining the group, the first fetches).
    fractions = sorted(rng.uniform(0.05, 0.9) for _ in range(kills))
    plan = [("after start", rng.uniform(0.5, 8.0)) if rng.random() < 0.3 else ("progress", f) for f in fractions]
    killed_at: list[str] = []
    with Tally(cluster, [ENRICHED, DEADLETTER]) as tally:
        started = time.monotonic()
        worker.start()
        for mode, value in plan:
            if mode == "progress":
                target = int(value * n)
                tally.wait(lambda t=target: tally.covered(expected) >= t, 900, alive=[worker], what=f"{target} inputs")
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                time.sleep(max(0.0, worker.started_at + value - time.monotonic()))
            out = tally.covered(expected)
            worker.kill9()
            killed_at.append(f"{out} out" if mode == "progress" else f"{value:.1f} s after start ({out} out)")
            worker.start()
        tally.wait(lambda: tally.covered(expected) == n, 1200, alive=[worker], what=f"all {n} inputs")
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # stragglers: duplicates produced just before the end
        code = worker.terminate()
        enriched, enriched_ts, _ = tally.snapshot(ENRICHED)
        dead, _, _ = tally.snapshot(DEADLETTER)

    lost = expected - set(enriched) - set(dead)
    strangers = (set(enriched) | set(dead)) - expected
    misplaced = (bad & set(enriched)) | (good & set(dead))
    duplicates = sum(c - 1 for c in enriched.values()) + sum(c - 1 for c in dead.values())
    copies: Counter[int] = Counter(enriched.values())
    rate = n / elapsed
    # Per kill: the batch whose outputs were being acknowledged, the one in the model (2 x max_batch),
    # and what was acknowledged since the last commit (the commit interval at the measured rate, x2).
    bound = kills * (2 * MAX_BATCH + int(2 * COMMIT_INTERVAL_S * rate) + 1)
    report(
        "crash: SIGKILL and restart",
        {
            "inputs": f"{n} ({len(good)} good, {len(bad)} malformed); produced in {produce_s:.1f} s",
            "kills (SIGKILL)": "; ".join(killed_at),
            "lost": len(lost),
            "enriched (distinct)": len(good & set(enriched)),
            "dead-lettered (distinct)": len(bad & set(dead)),
            "duplicates": f"{duplicates} ({duplicates / max(kills, 1):.0f} per kill; bound {bound})",
            "copies per enriched id": dict(sorted(copies.items())),
            "elapsed": f"{elapsed:.0f} s ({rate:.0f} inputs/s with the restarts)",
            "longest output pause": f"{max_gap_s(enriched_ts):.1f} s",
            "worker exit (SIGTERM at end)": code,
        },
    )
    assert not lost, f"{len(lost)} inputs lost, e.g. {sorted(lost)[:5]}"
    assert not strangers
    assert not misplaced, f"good in the DLQ or bad enriched: {sorted(misplaced)[:5]}"
    assert duplicates <= bound
    assert code == 0
