"""Stop the broker in the middle of a stream and start it again: the worker recovers on its own, 0 lost.

The broker is the test's own (a temporary data dir and a free port), never the shared one. It is
stopped (SIGTERM, a clean shutdown) once a quarter of ``STREAMER_FAULTS_RESTART_N`` tickets (default
4,000) are out, kept down ``STREAMER_FAULTS_RESTART_DOWN_S`` seconds (default 10), and started again
from the same data dir: topics, records and committed offsets survive. Nobody touches the worker: it
must keep running, resume within ``RECOVERY_LIMIT_S`` of the broker being back, and finish the stream.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory

from streamer.demo import demo_tickets
from streamer.kafka import local

from .conftest import DEADLETTER, ENRICHED, FAUST_ENV, TICKETS, WORKER_ENV, Tally, env_int, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(900)]

RECOVERY_LIMIT_S = 90.0


def test_broker_stop_and_start_mid_stream_worker_recovers_alone(
    broker_factory: Callable[..., local.Broker],
    topic_factory: TopicFactory,
    worker_factory: WorkerFactory,
    rng: random.Random,
) -> None:
    own = broker_factory()  # this test's own: stopped at the end whatever happened
    port, data_dir = own.port, own.data_dir
    n = env_int("RESTART_N", 4000)
    down_s = env_int("RESTART_DOWN_S", 10)
    cluster = topic_factory(label="faults.restart", bootstrap=f"127.0.0.1:{port}")
    run = uuid.uuid4().hex[:6]
    records = []
    for i, ticket in enumerate(demo_tickets(n, seed=rng.randrange(1 << 30))):
        ticket["id"] = f"{ticket['id']}-{run}-{i}"
        records.append((ticket["id"].encode(), orjson.dumps(ticket)))
    expected = {key for key, _ in records}
    cluster.produce(TICKETS, records)

    with Tally(cluster, [ENRICHED, DEADLETTER]) as tally:
        worker = worker_factory(cluster, name="restart", group=f"faults-restart-{run}", env={**FAUST_ENV, **WORKER_ENV})
        tally.wait(lambda: tally.covered(expected) >= n // 4, 600, alive=[worker], what="a quarter of the stream")
        stopped_at = time.time()
        local.stop(data_dir)
        out_at_stop = tally.covered(expected)
        stop_s = time.time() - stopped_at
        time.sleep(down_s)
        assert worker.alive, f"worker exited while the broker was down:\n{worker.log_tail()}"
        broker = local.start(port=port, data_dir=data_dir, timeout=120)
        back_at = time.time()
        back_ms = int(back_at * 1000)

        def resumed() -> bool:
            return any(ts >= back_ms for ts in tally.snapshot(ENRICHED)[1])

        recovery_s = tally.wait(resumed, RECOVERY_LIMIT_S, alive=[worker], what="the first output after the restart")
        tally.wait(lambda: tally.covered(expected) == n, 900, alive=[worker], what=f"all {n} inputs")
        time.sleep(2.0)
        code = worker.terminate()
        enriched, timestamps, _ = tally.snapshot(ENRICHED)
        dead, _, _ = tally.snapshot(DEADLETTER)

    first_after = min(ts for ts in timestamps if ts >= back_ms) / 1000
    last_before = max((ts for ts in timestamps if ts < stopped_at * 1000), default=stopped_at * 1000) / 1000
    lost = expected - set(enriched)
    duplicates = sum(c - 1 for c in enriched.values())
    warnings = sum(1 for line in worker.log_text().splitlines() if '"level": "warning"' in line)
    report(
        "broker restart",
        {
            "inputs": n,
            "out when the broker stopped": out_at_stop,
            "broker stop (SIGTERM, clean)": f"{stop_s:.1f} s; down {down_s} s; start {broker.startup_s:.1f} s",
            "worker resumed after broker back": f"{first_after - back_at:.1f} s (limit {RECOVERY_LIMIT_S:.0f} s)",
            "output pause": f"{first_after - last_before:.1f} s (last output before stop -> first after)",
            "lost": len(lost),
            "duplicates": duplicates,
            "dead letters": len(dead),
            "worker restarts": worker.starts - 1,
            "worker warnings logged": warnings,
            "worker exit (SIGTERM at end)": code,
        },
    )
    assert recovery_s <= RECOVERY_LIMIT_S
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:5]}"
    assert not dead
    assert worker.starts == 1
    assert code == 0
