"""``python -m streamer worker`` (ticket path) as a process on the real broker: metrics, readiness, logs, SIGTERM.

Each test has topics of its own (a unique prefix) and its own consumer group. What the worker reports on
``/metrics`` is checked against what was sent and against what came out; a SIGTERM in the middle of a
stream must exit 0 in time, and a second worker of the same group must take over exactly where the first
committed: every ticket enriched exactly once across the two.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import Topics
from harness.processes import StreamerProcess, http_get, metric

from streamer.demo import demo_tickets

pytestmark = pytest.mark.kafka

SHUTDOWN_TIMEOUT_S = 20.0
TICKETS = "support.tickets.v1"
ENRICHED = "support.tickets.enriched.v1"
DEADLETTER = "streamer.deadletter.v1"


@pytest.fixture
def cluster(topic_factory: TopicFactory) -> Topics:
    return topic_factory(label="e2e")


@pytest.fixture
def start_worker(cluster: Topics, worker_factory: WorkerFactory) -> Callable[..., StreamerProcess]:
    """A ``python -m streamer worker --only tickets`` with /metrics on a free port, started."""

    def start(group: str, log_level: str = "INFO") -> StreamerProcess:
        # The ticket path alone: what these tests count is the tickets' metrics and offsets.
        env = {
            "STREAMER_MAX_BATCH": "16",
            "STREAMER_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
            "STREAMER_LOG_LEVEL": log_level,
        }
        return worker_factory(cluster, group=group, only="tickets", env=env, metrics=True)

    return start


def enriched_ids(cluster: Topics) -> Counter[str]:
    return Counter(v["id"] for v in cluster.docs(ENRICHED))


def tickets(n: int, seed: int, run: str) -> list[dict[str, Any]]:
    docs = list(demo_tickets(n, seed=seed))
    for doc in docs:
        doc["id"] = f"{doc['id']}-{run}"
    return docs


BAD: dict[str, tuple[bytes, str]] = {
    "json": (b'{"id": "x", "body": ', "invalid_json"),
    "type": (orjson.dumps({"id": "bad-type", "created_at": "2026-11-28T09:00:00Z", "body": 42}), "schema"),
    "utf8": (b'{"id": "\xff\xfe", "body": "x"}', "invalid_utf8"),
    "array": (b"[1, 2, 3]", "not_an_object"),
    "missing": (orjson.dumps({"id": "bad-missing", "body": "no created_at"}), "schema"),
}


def test_metrics_match_what_was_sent_ready_and_clean_exit(
    cluster: Topics, start_worker: Callable[..., StreamerProcess], test_bundle: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    worker = start_worker(f"e2e-{run}")
    worker.wait_ready()
    # Before ready, /ready named what was missing (assignment or broker; the model loads before it listens).
    for status, doc in worker.ready_states[:-1]:
        if status == 503:
            assert doc is not None and doc["failing"]
            assert set(doc["failing"]) <= {"assignment", "broker"}, doc
    assert worker.ready_states[-1][1]["checks"]["assignment"]["ok"]
    assert http_get(worker.base + "/health")[0] == 200

    good = tickets(30, seed=21, run=run)
    records = [(t["id"].encode(), orjson.dumps(t)) for t in good]
    records += [(f"bad-{name}-{run}".encode(), raw) for name, (raw, _) in BAD.items()]
    cluster.produce(TICKETS, records)
    sent = len(records)

    samples = worker.wait_metric(
        lambda s: (
            metric(s, "streamer_events_in_total", topic=TICKETS) >= sent
            and metric(s, "streamer_outputs_total", path="tickets", topic=ENRICHED)
            + metric(s, "streamer_outputs_total", path="tickets", topic=DEADLETTER)
            >= sent
        )
    )
    assert metric(samples, "streamer_events_in_total", topic=TICKETS) == sent
    assert metric(samples, "streamer_outputs_total", path="tickets", topic=ENRICHED) == len(good)
    assert metric(samples, "streamer_outputs_total", path="tickets", topic=DEADLETTER) == len(BAD)
    expected_dead = Counter(code for _, code in BAD.values())
    for code, n in expected_dead.items():
        assert metric(samples, "streamer_dead_letters_total", path="tickets", reason=code) == n, code
    assert metric(samples, "streamer_batch_size_sum", path="tickets") == sent
    assert metric(samples, "streamer_end_to_end_latency_seconds_count", path="tickets") == sent
    assert (
        metric(samples, "streamer_inference_seconds_count", path="tickets")
        == metric(samples, "streamer_batch_size_count", path="tickets")
        >= 1
    )

    # Escalation reasons and team queues as counted agree with the records that came out.
    enriched = cluster.docs(ENRICHED)
    assert Counter(r["id"] for r in enriched) == Counter(t["id"] for t in good)
    reasons = Counter(reason["code"] for r in enriched for reason in r["triage"]["escalation"]["reasons"])
    for code, n in reasons.items():
        assert metric(samples, "streamer_escalations_total", path="tickets", reason=code) == n, code
    routes = Counter(route for r in enriched for route in r["triage"]["routes"])
    for route, n in routes.items():
        assert metric(samples, "streamer_outputs_total", path="tickets", topic=route) == n, route
    escalated = sum(bool(r["triage"]["escalation"]["escalate"]) for r in enriched)
    assert metric(samples, "streamer_outputs_total", path="tickets", topic="llm.escalations.v1") == escalated

    manifest = json.loads((test_bundle / "manifest.json").read_text())
    info = [k for k in samples if k[0] == "streamer_model_info"]
    assert len(info) == 1 and ("version", manifest["version"]) in info[0][1]
    assert metric(samples, "streamer_partitions_assigned", group=f"e2e-{run}", path="tickets") == 6
    assert metric(samples, "streamer_process_start_time_seconds") > 0

    # Everything is committed within a commit interval and one lag measurement: lag 0 on every partition.
    samples = worker.wait_metric(
        lambda s: (
            sum(1 for k in s if k[0] == "streamer_consumer_lag") == 6
            and all(v == 0 for k, v in s.items() if k[0] == "streamer_consumer_lag")
        ),
        timeout=30,
    )

    code, took = worker.timed_terminate(SHUTDOWN_TIMEOUT_S + 15)
    assert code == 0, worker.log_tail()
    assert took < SHUTDOWN_TIMEOUT_S
    print(
        f"/ready answers on the way: {[s for s, _ in worker.ready_states]}; idle SIGTERM: exit {code} in {took:.2f} s"
    )

    # Logs: JSON lines; dead letters say where they came from; no ticket text anywhere.
    lines = worker.log_lines()
    dead = [line for line in lines if line["event"] == "record dead-lettered"]
    assert len(dead) == len(BAD)
    for line in dead:
        assert line["topic"] == cluster.topic(TICKETS) and line["offset"] >= 0 and "partition" in line
        assert line["bundle_version"] == manifest["version"]
    blob = worker.log_path.read_text(errors="replace")
    for t in good:
        assert t["body"][:40] not in blob
    assert any(line["event"] == "worker stopped" for line in lines)


def test_sigterm_mid_stream_exits_0_and_the_next_worker_resumes_exactly_once(
    cluster: Topics, start_worker: Callable[..., StreamerProcess]
) -> None:
    run = uuid.uuid4().hex[:6]
    group = f"e2e-{run}"
    first = start_worker(group, log_level="DEBUG")  # DEBUG: one line per finished batch
    first.wait_ready()
    burst = tickets(240, seed=22, run=run)
    ids = {t["id"] for t in burst}
    cluster.produce(TICKETS, [(t["id"].encode(), orjson.dumps(t)) for t in burst])

    # SIGTERM while batches are in flight: some done, most not.
    first.wait_metric(lambda s: metric(s, "streamer_events_in_total", topic=TICKETS) >= 32)
    code, took = first.timed_terminate(SHUTDOWN_TIMEOUT_S + 15)
    assert code == 0, first.log_tail()
    assert took < SHUTDOWN_TIMEOUT_S, took
    after_first = enriched_ids(cluster)
    assert set(after_first) <= ids
    assert all(n == 1 for n in after_first.values()), "duplicates from one worker"
    assert 0 < len(after_first) < len(ids), "the SIGTERM was meant to land mid-stream"
    # The batches it held when the signal came were finished, not dropped: outputs after the signal.
    events = [line["event"] for line in first.log_lines()]
    signalled = events.index("shutdown requested")
    finished_after = events[signalled:].count("batch done")
    assert finished_after >= 1, "no batch was finished after SIGTERM"
    print(
        f"first worker: {len(after_first)}/{len(ids)} enriched, {finished_after} batch(es) finished after "
        f"SIGTERM, exit {code} in {took:.2f} s"
    )

    # The next worker starts at the committed offsets: it processes exactly what the first left.
    second = start_worker(group)
    second.wait_ready()
    left = len(ids) - len(after_first)
    samples = second.wait_metric(lambda s: metric(s, "streamer_outputs_total", path="tickets", topic=ENRICHED) >= left)
    code, _ = second.timed_terminate(SHUTDOWN_TIMEOUT_S + 15)
    assert code == 0, second.log_tail()
    assert metric(samples, "streamer_events_in_total", topic=TICKETS) == left
    final = enriched_ids(cluster)
    assert set(final) == ids, f"lost: {len(ids - set(final))}"
    assert [i for i, n in final.items() if n != 1] == [], "duplicated outputs"
