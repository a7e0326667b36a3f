"""``/metrics`` of a worker running both paths, on the real broker: what it counts is what went in and came out.

One ``python -m streamer worker`` (tickets and logs in one process) on topics of its own. Tickets and log
lines, good and undecodable, plus an error burst that escalates, are sent; then every output topic is read
back and each counter of ``/metrics`` (records in, outputs per path and topic, dead letters and escalation
reasons per path, log alerts and templates) must equal what the topics hold, and consumer lag must be
reported for both consumer groups: ``<group>`` on the ticket partitions and ``<group>-logs`` on the log ones.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import CATALOG, Topics, docs
from harness.processes import Samples, StreamerProcess, http_get, metric, parse_metrics

from streamer.demo import demo_log_lines, demo_tickets

pytestmark = pytest.mark.kafka

TICKETS, LOGS = "support.tickets.v1", "ops.logs.v1"
ESCALATIONS, DEADLETTER = "llm.escalations.v1", "streamer.deadletter.v1"
TICKET_OUTPUTS_OWN = "support."  # the ticket path's own output topics (enriched, team queues) start so
LOG_OUTPUTS_OWN = ("ops.logs.enriched.v1", "ops.alerts.v1", "ops.log_templates.v1")
#: A minute far from the wall clock: the burst's window is the test's, not the clock's.
T0 = datetime(2026, 4, 6, 9, 0, tzinfo=timezone.utc)
value = metric


def scrape(proc: StreamerProcess) -> Samples:
    status, body = http_get(f"{proc.base}/metrics")
    return parse_metrics(body.decode()) if status == 200 else {}


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and want <= key}


def read_all(topics: Topics) -> dict[str, list[Any]]:
    """Every record of every output topic, decoded, from the beginning to the current end."""
    return {name: docs(topics.read(name)) for name in sorted(CATALOG.topics) if name not in (TICKETS, LOGS)}


@pytest.fixture(scope="module")
def topics(module_topic_factory: TopicFactory) -> Topics:
    return module_topic_factory(label="metrics")


@pytest.fixture(scope="module")
def worker(topics: Topics, module_worker_factory: WorkerFactory) -> tuple[StreamerProcess, str]:
    group = f"test-metrics-{uuid.uuid4().hex[:8]}"
    env = {
        "STREAMER_MAX_BATCH": "16",
        "STREAMER_LOG_MAX_BATCH": "100",  # several log batches, so held records cross batches
    }
    proc = module_worker_factory(topics, name="metrics-worker", group=group, only=None, env=env, metrics=True)
    return proc, group


def wait_for(proc: StreamerProcess, check: Callable[[Samples], bool], timeout: float = 240.0) -> Samples:
    deadline = time.monotonic() + timeout
    samples = scrape(proc)
    while not check(samples):
        assert proc.alive, f"worker died:\n{proc.log_tail()}"
        assert time.monotonic() < deadline, "metrics never matched"
        time.sleep(0.5)
        samples = scrape(proc)
    return samples


def log_records(run: str) -> list[tuple[bytes | None, bytes | None]]:
    """Demo lines, an error burst of one template (alert and escalation) and three undecodable records."""
    records: list[tuple[bytes | None, bytes | None]] = []
    for line in demo_log_lines(300, seed=5):
        if isinstance(line, dict):
            records.append((str(line["service"]).encode(), orjson.dumps(line)))
        else:
            records.append((None, line.encode()))
    service = f"payments-{run}"
    for i in range(40):
        doc = {
            "id": f"{service}-{i}",
            "timestamp": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "level": "ERROR",
            "service": service,
            "message": f"Settlement batch {9000 + i} rejected by clearing house with status {400 + i % 2}",
        }
        records.append((service.encode(), orjson.dumps(doc)))
    records += [
        (b"bad-utf8", b"2026-04-06T09:00:00Z ERROR caf\xe9 \xff broken"),
        (b"bad-json", b'{"message": "unterminated'),
        (b"bad-tombstone", None),
    ]
    return records


def ticket_records(run: str) -> list[tuple[bytes | None, bytes | None]]:
    docs = list(demo_tickets(24, seed=8))
    records: list[tuple[bytes | None, bytes | None]] = []
    for doc in docs:
        doc["id"] = f"{doc['id']}-{run}"
        records.append((doc["id"].encode(), orjson.dumps(doc)))
    return [*records, (b"bad-ticket", b'{"id": "x", "body": ')]


def source_path(record: dict[str, Any], prefix: str) -> str:
    return "logs" if record["source"]["topic"] == prefix + LOGS else "tickets"


def test_metrics_of_both_paths_equal_what_went_in_and_came_out_and_lag_covers_both_groups(
    topics: Topics, worker: tuple[StreamerProcess, str]
) -> None:
    proc, group = worker
    logs_group = f"{group}-logs"
    # Both groups have their six partitions before anything is sent.
    wait_for(
        proc,
        lambda s: (
            value(s, "streamer_partitions_assigned", group=group, path="tickets") == 6
            and value(s, "streamer_partitions_assigned", group=logs_group, path="logs") == 6
        ),
    )
    run = uuid.uuid4().hex[:6]
    logs, tickets = log_records(run), ticket_records(run)
    topics.produce(LOGS, logs)
    topics.produce(TICKETS, tickets)

    # Every input counted, and (the log path holds a batch's enriched records until the next poll) every
    # line's enriched record or dead letter acknowledged.
    def settled(s: Samples) -> bool:
        log_out = sum(
            value(s, "streamer_outputs_total", path="logs", topic=t) for t in ("ops.logs.enriched.v1", DEADLETTER)
        )
        ticket_out = sum(
            value(s, "streamer_outputs_total", path="tickets", topic=t)
            for t in ("support.tickets.enriched.v1", DEADLETTER)
        )
        return (
            value(s, "streamer_events_in_total", topic=LOGS) == len(logs)
            and value(s, "streamer_events_in_total", topic=TICKETS) == len(tickets)
            and log_out == len(logs)
            and ticket_out == len(tickets)
        )

    wait_for(proc, settled)
    time.sleep(1.0)  # outputs produced after the last line's (templates, alerts) are counted with its batch
    samples = scrape(proc)
    out = read_all(topics)

    # Outputs per path and topic: the topic's records, split by the path that wrote them.
    produced: Counter[tuple[str, str]] = Counter()
    for topic, records in out.items():
        for record in records:
            if topic in (ESCALATIONS, DEADLETTER):
                path = source_path(record, topics.prefix)
            elif topic.startswith(TICKET_OUTPUTS_OWN):
                path = "tickets"
            else:  # the log path's own topics, and the team topics the logs rules of routes.yaml send to
                assert topic in LOG_OUTPUTS_OWN or (topic.startswith("team.") and topic.endswith(".logs.v1")), topic
                path = "logs"
            produced[(path, topic)] += 1
    counted = {
        (dict(labels)["path"], dict(labels)["topic"]): v
        for labels, v in series(samples, "streamer_outputs_total").items()
    }
    assert counted == produced
    assert produced[("logs", "ops.logs.enriched.v1")] == len(logs) - 3
    assert produced[("logs", ESCALATIONS)] >= 1 and produced[("logs", "ops.alerts.v1")] >= 1
    assert produced[("tickets", DEADLETTER)] == 1 and produced[("logs", DEADLETTER)] == 3

    # Dead letters and escalation reasons per path, from the records themselves.
    dead = Counter((source_path(d, topics.prefix), d["error"]["code"]) for d in out[DEADLETTER])
    assert dead[("logs", "invalid_utf8")] == dead[("logs", "invalid_json")] == 1
    counted_dead = {
        (dict(k)["path"], dict(k)["reason"]): v for k, v in series(samples, "streamer_dead_letters_total").items()
    }
    assert counted_dead == dead
    # Ticket reasons are counted per ticket, escalated or not (as its enriched record gives them); log
    # reasons per escalation record.
    ticket_reasons = Counter(
        reason["code"] for r in out["support.tickets.enriched.v1"] for reason in r["triage"]["escalation"]["reasons"]
    )
    log_reasons = Counter(reason["code"] for e in out[ESCALATIONS] if e["kind"] == "log" for reason in e["reasons"])
    counted_reasons = series(samples, "streamer_escalations_total")
    assert {dict(k)["reason"]: v for k, v in counted_reasons.items() if ("path", "logs") in k} == log_reasons
    assert {dict(k)["reason"]: v for k, v in counted_reasons.items() if ("path", "tickets") in k} == ticket_reasons
    assert sum(log_reasons.values()) >= 1

    # The log path's own: alerts per kind, templates published.
    alerts = Counter(a["kind"] for a in out["ops.alerts.v1"])
    assert {dict(k)["kind"]: v for k, v in series(samples, "streamer_log_alerts_total").items()} == alerts
    assert value(samples, "streamer_log_templates_published_total") == len(out["ops.log_templates.v1"])
    assert value(samples, "streamer_log_templates_classified_total") >= 1
    assert value(samples, "streamer_batch_size_sum", path="logs") == len(logs)
    assert value(samples, "streamer_batch_size_sum", path="tickets") == len(tickets)
    assert value(samples, "streamer_batch_size_count", path="logs") >= len(logs) // 100

    # Lag for both groups, on the partitions this worker owns in each: all caught up once committed.
    samples = wait_for(
        proc,
        lambda s: (
            {dict(k)["partition"] for k in series(s, "streamer_consumer_lag", group=group, topic=TICKETS)}
            == {str(p) for p in range(6)}
            and {dict(k)["partition"] for k in series(s, "streamer_consumer_lag", group=logs_group, topic=LOGS)}
            == {str(p) for p in range(6)}
            and all(v == 0 for v in series(s, "streamer_consumer_lag").values())
        ),
        timeout=60,
    )
    assert {dict(k)["group"] for k in series(samples, "streamer_consumer_lag")} == {group, logs_group}
    assert len(series(samples, "streamer_consumer_lag")) == 12
    print(
        f"sent {len(tickets)} tickets, {len(logs)} log records; outputs per (path, topic): {dict(produced)}; "
        f"dead letters {dict(dead)}; log escalation reasons {dict(log_reasons)}; alerts {dict(alerts)}"
    )
