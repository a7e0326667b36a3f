"""The log path of the worker as a process (``streamer worker --only logs``) on the real broker.

One worker serves most of the module on topics of its own (a unique prefix); each test uses services and
message texts no other test uses, so their templates, bursts and alerts cannot mix. Log lines carry
explicit event timestamps, so windows are the test's, not the wall clock's. The restart test runs two
workers one after the other on topics of its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.demo import demo_log_lines
from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.settings import Settings
from streamer.topics import SchemaRegistry, load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
MAX_EVENT_BYTES = 20_000
LOGS = "ops.logs.v1"
ENRICHED = "ops.logs.enriched.v1"
ALERTS = "ops.alerts.v1"
TEMPLATES = "ops.log_templates.v1"
ESCALATIONS = "llm.escalations.v1"
DEADLETTER = "streamer.deadletter.v1"
PAYMENTS = "team.payments.logs.v1"
TEAMS = (PAYMENTS, "team.security.logs.v1", "team.storage.logs.v1", "team.platform.logs.v1")
LOG_TOPICS = (LOGS, ENRICHED, ALERTS, TEMPLATES, ESCALATIONS, DEADLETTER, *TEAMS)
SCHEMAS = {
    ENRICHED: "enriched_log.v1.json",
    PAYMENTS: "enriched_log.v1.json",
    ALERTS: "alert.v1.json",
    TEMPLATES: "log_template.v1.json",
    ESCALATIONS: "escalation.v1.json",
    DEADLETTER: "deadletter.v1.json",
}
#: A minute boundary far from the wall clock; every test picks its own day after it.
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)

Record = tuple[bytes | None, bytes | None]


def word(n: int = 8) -> str:
    """Letters only: digits would make the miner mask it as a parameter."""
    return "".join(random.choice(string.ascii_lowercase) for _ in range(n))


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Cluster:
    """Log topics behind a unique prefix, with produce and read helpers."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix

    @classmethod
    def create(cls, bootstrap: str, name: str) -> Cluster:
        prefix = f"t.{name}.{uuid.uuid4().hex[:8]}."
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topics_dir=REPO / "topics")
        catalog = load_catalog(settings.topics_file)
        asyncio.run(apply_topics(settings, [catalog[t] for t in LOG_TOPICS]))
        return cls(bootstrap, prefix)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def produce(self, records: list[Record], topic: str = LOGS) -> list[tuple[int, int]]:
        """Send records in order; their (partition, offset)."""

        async def go() -> list[tuple[int, int]]:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=2_000_000)
            await producer.start()
            try:
                futures = [await producer.send(self.topic(topic), value, key=key) for key, value in records]
                return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
            finally:
                await producer.stop()

        return asyncio.run(go())

    def read_all(self, topic: str, *, decode: bool = True) -> list[tuple[bytes | None, Any]]:
        """Every record of a topic from the beginning to its current end: (key, decoded or raw value)."""

        async def go() -> list[tuple[bytes | None, Any]]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            try:
                parts = await topic_partitions(consumer, self.topic(topic))
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                ends = await consumer.end_offsets(parts)
                out: list[tuple[bytes | None, Any]] = []
                deadline = time.monotonic() + 60
                while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                    assert time.monotonic() < deadline, f"reading {topic} took too long"
                    for messages in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(
                            (m.key, orjson.loads(m.value) if decode and m.value is not None else m.value)
                            for m in messages
                        )
                return out
            finally:
                await consumer.stop()

        return asyncio.run(go())

    def wait_for(
        self, topic: str, match: Callable[[Any], bool], count: int, *, timeout: float = 120.0
    ) -> list[dict[str, Any]]:
        """Records of ``topic`` that ``match``, once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [v for _, v in self.read_all(topic) if v is not None and match(v)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(1.0)


class Worker:
    """``python -m streamer worker --only logs`` with its log file."""

    def __init__(self, cluster: Cluster, bundle: Path, group: str, log_path: Path) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            "STREAMER_KAFKA_BOOTSTRAP": cluster.bootstrap,
            "STREAMER_TOPIC_PREFIX": cluster.prefix,
            "STREAMER_GROUP_ID": group,
            "STREAMER_BUNDLE_DIR": str(bundle),
            "STREAMER_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_LOG_FORMAT": "json",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer", "worker", "--only", "logs"], env=self.env, stdout=log, stderr=log
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if code != 0:
            print(self.log_path.read_text()[-5000:])
        return code


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str) -> Cluster:
    return Cluster.create(kafka_bootstrap, "logworker")


@pytest.fixture(scope="module")
def worker(cluster: Cluster, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    log_path = tmp_path_factory.mktemp("log-worker") / "worker.log"
    w = Worker(cluster, test_bundle, f"test-logs-{uuid.uuid4().hex[:8]}", log_path).start()
    yield w
    assert w.stop() == 0


def assert_valid(topic: str, records: list[dict[str, Any]]) -> None:
    for record in records:
        assert REGISTRY.errors(SCHEMAS[topic], record) == [], record


def test_every_line_comes_out_enriched_with_valid_outputs(cluster: Cluster, worker: Worker) -> None:
    lines = list(demo_log_lines(400, seed=21))
    records: list[Record] = []
    for line in lines:
        if isinstance(line, dict):
            records.append((str(line["service"]).encode(), orjson.dumps(line)))
        else:
            records.append((None, line.encode()))
    sent = set(cluster.produce(records))
    source = cluster.topic(LOGS)

    def ours(v: dict[str, Any]) -> bool:
        return bool(v["source"]["topic"] == source and (v["source"]["partition"], v["source"]["offset"]) in sent)

    enriched = cluster.wait_for(ENRICHED, ours, len(sent))
    assert worker.alive(), "worker died"
    assert {(r["source"]["partition"], r["source"]["offset"]) for r in enriched} == sent
    assert_valid(ENRICHED, enriched)
    assert {r["model"]["name"] for r in enriched} == {"default"}
    assert len({r["template_id"] for r in enriched}) < len(enriched) / 4, "lines should share templates"
    # Whatever else came out validates too; published templates cover every template a line names.
    for topic in (ALERTS, ESCALATIONS, TEMPLATES):
        assert_valid(topic, [v for _, v in cluster.read_all(topic) if v is not None])
    templates = {v["template_id"]: v for _, v in cluster.read_all(TEMPLATES) if v is not None}
    assert {r["template_id"] for r in enriched} <= set(templates)


def test_a_burst_raises_one_alert_per_window_and_template(cluster: Cluster, worker: Worker) -> None:
    service, provider = f"billing-{word()}", word()
    first = T0 + timedelta(days=1)  # window [10:00, 10:01)
    second = T0 + timedelta(days=3)  # long after: the baseline has decayed to nothing
    records: list[Record] = []
    for start in (first, second):
        for i in range(45):
            doc = {
                "id": f"{service}-{start:%d}-{i}",
                "timestamp": iso(start + timedelta(seconds=i, milliseconds=500)),
                "level": "ERROR",
                "service": service,
                "message": f"Gateway {provider} declined capture of order ORD-{100000 + i} with code {500 + i % 3}",
            }
            records.append((service.encode(), orjson.dumps(doc)))
    # Quiet lines of the same service between the windows, and three separate sends for three batches.
    quiet = {"timestamp": iso(first + timedelta(minutes=5)), "level": "INFO", "service": service, "message": "ok"}
    cluster.produce(records[:30])
    cluster.produce([*records[30:60], (service.encode(), orjson.dumps(quiet))])
    cluster.produce(records[60:])

    enriched = cluster.wait_for(ENRICHED, lambda v: v["service"] == service, 91)
    assert len(enriched) == 91
    [template_id] = {r["template_id"] for r in enriched if r["severity"] == "error"}
    alerts = [v for _, v in cluster.read_all(ALERTS) if v and v["service"] == service]
    assert_valid(ALERTS, alerts)
    bursts = [a for a in alerts if a["kind"] == "burst"]
    assert sorted(a["window_start"] for a in bursts) == [iso(first), iso(second)]
    for alert in bursts:
        assert alert["template_id"] == template_id
        assert alert["count"] >= 20 and alert["severity"] == "error"
        assert alert["sample"] and "ORD-" in alert["sample"][0]
    assert [a["kind"] for a in alerts].count("new_error_template") == 1
    escalations = [v for _, v in cluster.read_all(ESCALATIONS) if v and v["labels"]["service"] == service]
    assert_valid(ESCALATIONS, escalations)
    codes = sorted(r["code"] for e in escalations for r in e["reasons"])
    assert codes == ["error_burst", "error_burst", "new_error_template"]
    assert all(e["kind"] == "log" for e in escalations)


def test_a_new_error_template_escalates_once_with_redacted_samples(cluster: Cluster, worker: Worker) -> None:
    service, queue = f"mailer-{word()}", word()
    email = f"{word(6)}.{word(5)}@example.org"

    def line(i: int) -> Record:
        doc = {
            "id": f"{service}-{i}",
            "timestamp": iso(T0 + timedelta(days=5, minutes=i)),
            "level": "error",
            "service": service,
            "message": f"Delivery to {email} failed on queue {queue}: mailbox unavailable after {i + 3} attempts",
        }
        return service.encode(), orjson.dumps(doc)

    cluster.produce([line(0)])
    [one] = cluster.wait_for(ENRICHED, lambda v: v["id"] == f"{service}-0", 1)
    cluster.produce([line(1)])  # a separate batch: the worker has published the first one's outputs already
    [two] = cluster.wait_for(ENRICHED, lambda v: v["id"] == f"{service}-1", 1)
    assert one["template_id"] == two["template_id"]
    assert email not in one["message"] and one["entities"]["pii"]

    escalations = [v for _, v in cluster.read_all(ESCALATIONS) if v and v["labels"]["service"] == service]
    assert len(escalations) == 1
    [esc] = escalations
    assert_valid(ESCALATIONS, [esc])
    assert esc["id"] == f"{service}-0"
    assert [r["code"] for r in esc["reasons"]] == ["new_error_template"]
    assert esc["labels"]["template_id"] == one["template_id"]
    assert esc["context"]["count"] == 1 and esc["context"]["sample"]
    assert esc["pii_counts"]
    assert email not in orjson.dumps(esc).decode()
    alerts = [v for _, v in cluster.read_all(ALERTS) if v and v["service"] == service]
    assert [a["kind"] for a in alerts] == ["new_error_template"]


def test_a_routed_line_arrives_on_its_team_topic_masked(cluster: Cluster, worker: Worker) -> None:
    run, email = word(), f"{word(6)}@example.org"

    def line(i: int, level: str) -> Record:
        doc = {
            "id": f"route-{run}-{i}",
            "timestamp": iso(T0 + timedelta(days=7, seconds=i)),
            "level": level,
            "service": "payments-worker",
            "message": f"Charge ch_{run} for {email} failed: card_declined (attempt {i})",
        }
        return b"payments-worker", orjson.dumps(doc)

    cluster.produce([line(0, "WARN"), line(1, "INFO"), line(2, "ERROR")])
    enriched = cluster.wait_for(ENRICHED, lambda v: v["id"].startswith(f"route-{run}-"), 3)
    routed = cluster.wait_for(PAYMENTS, lambda v: v["id"].startswith(f"route-{run}-"), 2)
    assert worker.alive(), "worker died"
    by_id = {r["id"]: r for r in enriched}
    assert by_id[f"route-{run}-0"]["routes"] == [PAYMENTS] and "routes" not in by_id[f"route-{run}-1"]
    assert sorted(r["id"] for r in routed) == [f"route-{run}-0", f"route-{run}-2"]  # info stays off the team topic
    assert_valid(PAYMENTS, routed)
    raw = [v for k, v in cluster.read_all(PAYMENTS, decode=False) if v is not None and run.encode() in v]
    assert len(raw) == 2 and all(email.encode() not in v for v in raw)
    for record in routed:
        assert "[EMAIL_1]" in record["message"] and "pii_values" not in record["entities"]
        assert record["template_id"] == by_id[record["id"]]["template_id"]


def test_undecodable_lines_go_to_the_dead_letter_topic_and_the_worker_keeps_going(
    cluster: Cluster, worker: Worker
) -> None:
    run = uuid.uuid4().hex[:6]
    service = f"edge-{word()}"
    bad: dict[str, tuple[bytes | None, str]] = {
        f"bad-utf8-{run}": (b"2026-03-02T10:00:00Z ERROR [x] caf\xe9 \xff broken", "invalid_utf8"),
        f"bad-json-{run}": (b'{"message": "unterminated', "invalid_json"),
        f"bad-type-{run}": (orjson.dumps({"service": service, "message": 42}), "schema"),
        f"bad-blank-{run}": (b"   \n", "schema"),
        f"bad-size-{run}": (b"x" * (MAX_EVENT_BYTES + 1000), "oversize"),
        f"bad-tombstone-{run}": (None, "not_an_object"),
    }
    good = [
        (service.encode(), orjson.dumps({"id": f"{service}-{i}", "service": service, "message": f"ok {i}"}))
        for i in range(5)
    ]
    records: list[Record] = []
    for i, (key, (value, _)) in enumerate(bad.items()):
        records.append((key.encode(), value))
        records.append(good[i % len(good)])
    cluster.produce(records)

    dead = cluster.wait_for(DEADLETTER, lambda v: v["raw"]["key"] in bad, len(bad))
    got = {d["raw"]["key"]: d for d in dead}
    assert set(got) == set(bad)
    assert_valid(DEADLETTER, dead)
    for key, (value, code) in bad.items():
        record = got[key]
        assert record["error"]["code"] == code, key
        assert record["error"]["message"]
        assert record["source"]["topic"] == cluster.topic(LOGS)
        raw = value or b""
        if record["raw"]["encoding"] == "base64":
            assert base64.b64decode(record["raw"]["value"]) == raw[: 64 * 1024]
        else:
            assert record["raw"]["value"].encode() == raw[: 64 * 1024]
    assert got[f"bad-type-{run}"]["error"]["field"] == "message"

    ids = {f"{service}-{i}" for i in range(5)}
    enriched = cluster.wait_for(ENRICHED, lambda v: v["id"] in ids, len(ids))
    assert {r["id"] for r in enriched} == ids
    assert worker.alive(), "worker died on bad input"


def test_restarts_keep_template_ids_and_do_not_alert_again(
    kafka_bootstrap: str, test_bundle: Path, tmp_path: Path
) -> None:
    """A template generalised before a restart still takes its lines after it: loaded, not mined again."""
    cluster = Cluster.create(kafka_bootstrap, "logrestart")
    group = f"test-logs-restart-{uuid.uuid4().hex[:8]}"
    service, region = f"quota-{word()}", word()

    def line(tenant: str, i: int) -> Record:
        doc = {
            "id": f"{service}-{tenant}",
            "timestamp": iso(T0 + timedelta(days=7, seconds=i)),
            "level": "ERROR",
            "service": service,
            "message": f"Quota exceeded for tenant {tenant} in region {region}",
        }
        return service.encode(), orjson.dumps(doc)

    first = Worker(cluster, test_bundle, group, tmp_path / "first.log").start()
    try:
        cluster.produce([line(t, i) for i, t in enumerate(("alpha", "bravo", "charlie"))])
        cluster.wait_for(ENRICHED, lambda v: v["service"] == service, 3)
        cluster.produce([line("delta", 3)])
        [before] = cluster.wait_for(ENRICHED, lambda v: v["id"] == f"{service}-delta", 1)
    finally:
        assert first.stop() == 0
    assert "<*>" in before["template"], before["template"]  # three tenants made the position a parameter
    alerts_before = [v for _, v in cluster.read_all(ALERTS) if v and v["service"] == service]
    assert alerts_before

    second = Worker(cluster, test_bundle, group, tmp_path / "second.log").start()
    try:
        cluster.produce([line("echo", 4)])
        [after] = cluster.wait_for(ENRICHED, lambda v: v["id"] == f"{service}-echo", 1, timeout=180)
    finally:
        assert second.stop() == 0
    assert after["template_id"] == before["template_id"]
    assert after["template"] == before["template"]
    alerts_after = [v for _, v in cluster.read_all(ALERTS) if v and v["service"] == service]
    assert alerts_after == alerts_before, "a restarted worker alerted again on a known template"
    # Nothing of the first run was processed again by the second (offsets were committed).
    ids = [v["id"] for _, v in cluster.read_all(ENRICHED) if v and v["service"] == service]
    assert sorted(ids) == sorted(f"{service}-{t}" for t in ("alpha", "bravo", "charlie", "delta", "echo"))


def test_a_worker_joining_mid_stream_takes_partitions_without_losing_or_repeating_lines(
    kafka_bootstrap: str, test_bundle: Path, tmp_path: Path
) -> None:
    """Revoke drains and commits the batches in flight; what a fetch returned across the rebalance is put back."""
    cluster = Cluster.create(kafka_bootstrap, "logrebalance")
    group = f"test-logs-rebalance-{uuid.uuid4().hex[:8]}"
    records: list[Record] = []
    for line in demo_log_lines(36_000, seed=5):
        if isinstance(line, dict):
            records.append((str(line["service"]).encode(), orjson.dumps(line)))
        else:
            records.append((None, line.encode()))
    first = Worker(cluster, test_bundle, group, tmp_path / "first.log").start()
    second = Worker(cluster, test_bundle, group, tmp_path / "second.log")
    sent: set[tuple[int, int]] = set()
    try:
        sent |= set(cluster.produce(records[:2000]))
        cluster.wait_for(ENRICHED, lambda v: True, 1)
        second.start()
        # A backlog the first worker needs several seconds for: the second joins while batches are in flight.
        sent |= set(cluster.produce(records[2000:]))
        cluster.wait_for(ENRICHED, lambda v: True, len(sent), timeout=300)
        assert first.alive() and second.alive()
    finally:
        codes = (first.stop(), second.stop())
    assert codes == (0, 0)
    source = cluster.topic(LOGS)
    seen = [(v["source"]["partition"], v["source"]["offset"]) for _, v in cluster.read_all(ENRICHED) if v]
    assert all(v["source"]["topic"] == source for _, v in cluster.read_all(ENRICHED)[:10])
    assert set(seen) == sent, f"{len(sent - set(seen))} lines never came out"
    assert len(seen) == len(sent), f"{len(seen) - len(set(seen))} lines came out twice"
    assert "log partitions revoked" in (tmp_path / "first.log").read_text()
    assert "log partitions assigned" in (tmp_path / "second.log").read_text()


def test_produce_logs_from_a_file(cluster: Cluster, tmp_path: Path) -> None:
    """``streamer produce logs --file``: objects re-encoded, text lines as they are, keyed by service."""
    service = f"shipper-{word()}"
    doc = {"timestamp": "2026-03-02T10:00:00Z", "level": "warn", "service": service, "message": "slow disk"}
    text = f"2026-03-02T10:00:01Z ERROR [{service}] payment failed"
    bare = f"just a line {word()}"
    path = tmp_path / "logs.txt"
    path.write_bytes(b"\n".join([orjson.dumps(doc), text.encode(), b"", bare.encode()]) + b"\n")
    env = {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": cluster.bootstrap, "STREAMER_TOPIC_PREFIX": cluster.prefix}
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "produce", "logs", "--file", str(path)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    records = {v: k for k, v in cluster.read_all(LOGS, decode=False) if v is not None}
    assert records[orjson.dumps(doc)] == service.encode()
    assert records[text.encode()] == service.encode()
    assert records[bare.encode()] is None
