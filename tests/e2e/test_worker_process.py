"""``python -m streamer worker`` (ticket path) as a process on the real broker: metrics, readiness, logs, SIGTERM.

Each test has topics of its own (a unique prefix) and its own consumer group. What the worker reports on
``/metrics`` is checked against what was sent and against what came out; a SIGTERM in the middle of a
stream must exit 0 in time, and a second worker of the same group must take over exactly where the first
committed: every ticket enriched exactly once across the two.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streamer.demo import demo_tickets
from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.settings import Settings
from streamer.topics import load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT_S = 20.0
TICKETS = "support.tickets.v1"
ENRICHED = "support.tickets.enriched.v1"
DEADLETTER = "streamer.deadletter.v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body; connection refused is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Cluster:
    bootstrap: str
    prefix: str

    def topic(self, name: str) -> str:
        return self.prefix + name

    def produce(self, records: list[tuple[bytes, bytes]]) -> None:
        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
            await producer.start()
            try:
                for key, val in records:
                    await producer.send(self.topic(TICKETS), val, key=key)
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(go())

    def read_all(self, name: str) -> list[tuple[bytes | None, bytes]]:
        """Every record of a topic, from the beginning up to its current end."""

        async def go() -> list[tuple[bytes | None, bytes]]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            try:
                parts = await topic_partitions(consumer, self.topic(name))
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                ends = await consumer.end_offsets(parts)
                out: list[tuple[bytes | None, bytes]] = []
                deadline = time.monotonic() + 60
                while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                    assert time.monotonic() < deadline, "reading the topic took too long"
                    for messages in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend((m.key, m.value) for m in messages)
                return out
            finally:
                await consumer.stop()

        return asyncio.run(go())

    def enriched_ids(self) -> Counter[str]:
        return Counter(orjson.loads(v)["id"] for _, v in self.read_all(ENRICHED))


@pytest.fixture
def cluster(kafka_bootstrap: str) -> Cluster:
    prefix = f"t.e2e.{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topics_dir=REPO / "topics")
    catalog = load_catalog(settings.topics_file)
    asyncio.run(apply_topics(settings, catalog.topics.values()))
    return Cluster(kafka_bootstrap, prefix)


class Worker:
    """One ``python -m streamer worker`` process with its metrics port and its log file."""

    def __init__(self, cluster: Cluster, bundle: Path, group: str, log_path: Path, log_level: str = "INFO") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            **os.environ,
            "STREAMER_KAFKA_BOOTSTRAP": cluster.bootstrap,
            "STREAMER_TOPIC_PREFIX": cluster.prefix,
            "STREAMER_GROUP_ID": group,
            "STREAMER_BUNDLE_DIR": str(bundle),
            "STREAMER_MAX_BATCH": "16",
            "STREAMER_METRICS_PORT": str(self.port),
            "STREAMER_METRICS_HOST": "127.0.0.1",
            "STREAMER_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
            "STREAMER_LOG_FORMAT": "json",
            "STREAMER_LOG_LEVEL": log_level,
        }
        self._log = log_path.open("wb")
        # The ticket path alone: what these tests count is the tickets' metrics and offsets.
        command = [sys.executable, "-m", "streamer", "worker", "--only", "tickets"]
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=self._log)
        self.ready_states: list[tuple[int, dict[str, Any] | None]] = []

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /ready until 200, remembering every distinct answer on the way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker died:\n{self.log_tail()}"
            status, body = http_get(self.base + "/ready")
            doc = json.loads(body) if body else None
            state = (status, doc)
            if not self.ready_states or self.ready_states[-1][0] != status:
                self.ready_states.append(state)
            if status == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout} s: {self.ready_states}\n{self.log_tail()}")

    def metrics(self) -> Samples:
        status, body = http_get(self.base + "/metrics")
        assert status == 200, status
        return parse_metrics(body.decode())

    def wait_metric(self, check: Callable[[Samples], bool], timeout: float = 180.0) -> Samples:
        deadline = time.monotonic() + timeout
        samples = self.metrics()
        while not check(samples):
            assert self.proc.poll() is None, f"worker died:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"metrics never matched:\n{self.log_tail()}"
            time.sleep(0.3)
            samples = self.metrics()
        return samples

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, time.monotonic() - began

    def log_lines(self) -> list[dict[str, Any]]:
        self._log.flush()
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            if raw.strip():
                lines.append(orjson.loads(raw))
        return lines

    def log_tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start_worker(cluster: Cluster, test_bundle: Path, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(group: str, log_level: str = "INFO") -> Worker:
        worker = Worker(cluster, test_bundle, group, tmp_path / f"worker-{len(workers)}.log", log_level)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()


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
    cluster: Cluster, start_worker: Callable[..., Worker], test_bundle: Path
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
    cluster.produce(records)
    sent = len(records)

    samples = worker.wait_metric(
        lambda s: (
            value(s, "streamer_events_in_total", topic=TICKETS) >= sent
            and value(s, "streamer_outputs_total", path="tickets", topic=ENRICHED)
            + value(s, "streamer_outputs_total", path="tickets", topic=DEADLETTER)
            >= sent
        )
    )
    assert value(samples, "streamer_events_in_total", topic=TICKETS) == sent
    assert value(samples, "streamer_outputs_total", path="tickets", topic=ENRICHED) == len(good)
    assert value(samples, "streamer_outputs_total", path="tickets", topic=DEADLETTER) == len(BAD)
    expected_dead = Counter(code for _, code in BAD.values())
    for code, n in expected_dead.items():
        assert value(samples, "streamer_dead_letters_total", path="tickets", reason=code) == n, code
    assert value(samples, "streamer_batch_size_sum", path="tickets") == sent
    assert value(samples, "streamer_end_to_end_latency_seconds_count", path="tickets") == sent
    assert (
        value(samples, "streamer_inference_seconds_count", path="tickets")
        == value(samples, "streamer_batch_size_count", path="tickets")
        >= 1
    )

    # Escalation reasons and team queues as counted agree with the records that came out.
    enriched = [orjson.loads(v) for _, v in cluster.read_all(ENRICHED)]
    assert Counter(r["id"] for r in enriched) == Counter(t["id"] for t in good)
    reasons = Counter(reason["code"] for r in enriched for reason in r["triage"]["escalation"]["reasons"])
    for code, n in reasons.items():
        assert value(samples, "streamer_escalations_total", path="tickets", reason=code) == n, code
    routes = Counter(route for r in enriched for route in r["triage"]["routes"])
    for route, n in routes.items():
        assert value(samples, "streamer_outputs_total", path="tickets", topic=route) == n, route
    escalated = sum(bool(r["triage"]["escalation"]["escalate"]) for r in enriched)
    assert value(samples, "streamer_outputs_total", path="tickets", topic="llm.escalations.v1") == escalated

    manifest = json.loads((test_bundle / "manifest.json").read_text())
    info = [k for k in samples if k[0] == "streamer_model_info"]
    assert len(info) == 1 and ("version", manifest["version"]) in info[0][1]
    assert value(samples, "streamer_partitions_assigned", group=f"e2e-{run}", path="tickets") == 6
    assert value(samples, "streamer_process_start_time_seconds") > 0

    # Everything is committed within a commit interval and one lag measurement: lag 0 on every partition.
    samples = worker.wait_metric(
        lambda s: (
            sum(1 for k in s if k[0] == "streamer_consumer_lag") == 6
            and all(v == 0 for k, v in s.items() if k[0] == "streamer_consumer_lag")
        ),
        timeout=30,
    )

    code, took = worker.terminate()
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
    cluster: Cluster, start_worker: Callable[..., Worker]
) -> None:
    run = uuid.uuid4().hex[:6]
    group = f"e2e-{run}"
    first = start_worker(group, log_level="DEBUG")  # DEBUG: one line per finished batch
    first.wait_ready()
    burst = tickets(240, seed=22, run=run)
    ids = {t["id"] for t in burst}
    cluster.produce([(t["id"].encode(), orjson.dumps(t)) for t in burst])

    # SIGTERM while batches are in flight: some done, most not.
    first.wait_metric(lambda s: value(s, "streamer_events_in_total", topic=TICKETS) >= 32)
    code, took = first.terminate()
    assert code == 0, first.log_tail()
    assert took < SHUTDOWN_TIMEOUT_S, took
    after_first = cluster.enriched_ids()
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
    samples = second.wait_metric(lambda s: value(s, "streamer_outputs_total", path="tickets", topic=ENRICHED) >= left)
    code, _ = second.terminate()
    assert code == 0, second.log_tail()
    assert value(samples, "streamer_events_in_total", topic=TICKETS) == left
    final = cluster.enriched_ids()
    assert set(final) == ids, f"lost: {len(ids - set(final))}"
    assert [i for i, n in final.items() if n != 1] == [], "duplicated outputs"
