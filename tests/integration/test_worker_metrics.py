"""``/metrics`` of a worker running both paths, on the real broker: what it counts is what went in and came out.

One ``python -m streamer worker`` (tickets and logs in one process) on topics of its own. Tickets and log
lines, good and undecodable, plus an error burst that escalates, are sent; then every output topic is read
back and each counter of ``/metrics`` (records in, outputs per path and topic, dead letters and escalation
reasons per path, log alerts and templates) must equal what the topics hold, and consumer lag must be
reported for both consumer groups: ``<group>`` on the ticket partitions and ``<group>-logs`` on the log ones.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streamer.demo import demo_log_lines, demo_tickets
from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.settings import Settings
from streamer.topics import load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
TICKETS, LOGS = "support.tickets.v1", "ops.logs.v1"
ESCALATIONS, DEADLETTER = "llm.escalations.v1", "streamer.deadletter.v1"
TICKET_OUTPUTS_OWN = "support."  # the ticket path's own output topics (enriched, team queues) start so
LOG_OUTPUTS_OWN = ("ops.logs.enriched.v1", "ops.alerts.v1", "ops.log_templates.v1")
#: A minute far from the wall clock: the burst's window is the test's, not the clock's.
T0 = datetime(2026, 4, 6, 9, 0, tzinfo=timezone.utc)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and want <= key}


class Topics:
    """The module's topics behind a unique prefix."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"t.metrics.{uuid.uuid4().hex[:8]}."
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=self.prefix, topics_dir=REPO / "topics")
        catalog = load_catalog(settings.topics_file)
        asyncio.run(apply_topics(settings, catalog.topics.values()))
        self.names = sorted(catalog.topics)

    def produce(self, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=2_000_000)
            await producer.start()
            try:
                for key, val in records:
                    await producer.send(self.prefix + topic, val, key=key)
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(go())

    def read_all(self) -> dict[str, list[Any]]:
        """Every record of every output topic, decoded, from the beginning to the current end."""
        return {name: self.read(name) for name in self.names if name not in (TICKETS, LOGS)}

    def read(self, name: str) -> list[Any]:
        async def go() -> list[Any]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            try:
                parts = await topic_partitions(consumer, self.prefix + name)
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                ends = await consumer.end_offsets(parts)
                records: list[Any] = []
                deadline = time.monotonic() + 60
                while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                    assert time.monotonic() < deadline, f"reading {name} took too long"
                    for messages in (await consumer.getmany(timeout_ms=500)).values():
                        records.extend(orjson.loads(m.value) if m.value is not None else None for m in messages)
                return records
            finally:
                await consumer.stop()

        return asyncio.run(go())


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str) -> Topics:
    return Topics(kafka_bootstrap)


@pytest.fixture(scope="module")
def worker(
    topics: Topics, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    log_path = tmp_path_factory.mktemp("metrics-worker") / "worker.log"
    port, group = free_port(), f"test-metrics-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": topics.bootstrap,
        "STREAMER_TOPIC_PREFIX": topics.prefix,
        "STREAMER_GROUP_ID": group,
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_METRICS_HOST": "127.0.0.1",
        "STREAMER_METRICS_PORT": str(port),
        "STREAMER_MAX_BATCH": "16",
        "STREAMER_LOG_MAX_BATCH": "100",  # several log batches, so held records cross batches
        "STREAMER_LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env, stdout=log, stderr=log)
        try:
            yield proc, port, group
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.returncode not in (0, -15):
        print(log_path.read_text(errors="replace")[-5000:])


def wait_for(
    proc: subprocess.Popen[bytes], port: int, check: Callable[[Samples], bool], timeout: float = 240.0
) -> Samples:
    deadline = time.monotonic() + timeout
    samples = scrape(port)
    while not check(samples):
        assert proc.poll() is None, "worker died"
        assert time.monotonic() < deadline, "metrics never matched"
        time.sleep(0.5)
        samples = scrape(port)
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
    topics: Topics, worker: tuple[subprocess.Popen[bytes], int, str]
) -> None:
    proc, port, group = worker
    logs_group = f"{group}-logs"
    # Both groups have their six partitions before anything is sent.
    wait_for(
        proc,
        port,
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

    wait_for(proc, port, settled)
    time.sleep(1.0)  # outputs produced after the last line's (templates, alerts) are counted with its batch
    samples = scrape(port)
    out = topics.read_all()

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
        port,
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
