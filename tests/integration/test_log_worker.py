"""The log path of the worker as a process (``streamer worker --only logs``) on the real broker.

One worker serves most of the module on topics of its own (a unique prefix); each test uses services and
message texts no other test uses, so their templates, bursts and alerts cannot mix. Log lines carry
explicit event timestamps, so windows are the test's, not the wall clock's. The restart test runs two
workers one after the other on topics of its own.
"""

from __future__ import annotations

import base64
import random
import string
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import REPO, Topics
from harness.processes import StreamerProcess, run_streamer, streamer_env, wait_until

from streamer.demo import demo_log_lines
from streamer.topics import SchemaRegistry

pytestmark = pytest.mark.kafka

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


def log_worker(
    factory: WorkerFactory, cluster: Topics, group: str, name: str, *, start: bool = True
) -> StreamerProcess:
    """``python -m streamer worker --only logs`` with the module's settings."""
    env = {"STREAMER_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES)}
    return factory(cluster, name=name, group=group, only="logs", env=env, start=start)


@pytest.fixture(scope="module")
def cluster(module_topic_factory: TopicFactory) -> Topics:
    return module_topic_factory(LOG_TOPICS, label="logworker")


@pytest.fixture(scope="module")
def worker(cluster: Topics, module_worker_factory: WorkerFactory) -> Iterator[StreamerProcess]:
    w = log_worker(module_worker_factory, cluster, f"test-logs-{uuid.uuid4().hex[:8]}", "log-worker")
    yield w
    assert w.terminate() == 0, w.log_tail(100)


def assert_valid(topic: str, records: list[dict[str, Any]]) -> None:
    for record in records:
        assert REGISTRY.errors(SCHEMAS[topic], record) == [], record


def test_every_line_comes_out_enriched_with_valid_outputs(cluster: Topics, worker: StreamerProcess) -> None:
    lines = list(demo_log_lines(400, seed=21))
    records: list[Record] = []
    for line in lines:
        if isinstance(line, dict):
            records.append((str(line["service"]).encode(), orjson.dumps(line)))
        else:
            records.append((None, line.encode()))
    sent = set(cluster.produce(LOGS, records))
    source = cluster.topic(LOGS)

    def ours(v: dict[str, Any]) -> bool:
        return bool(v["source"]["topic"] == source and (v["source"]["partition"], v["source"]["offset"]) in sent)

    enriched = cluster.docs(ENRICHED, until=len(sent), match=ours)
    assert worker.alive, "worker died"
    assert {(r["source"]["partition"], r["source"]["offset"]) for r in enriched} == sent
    assert_valid(ENRICHED, enriched)
    assert {r["model"]["name"] for r in enriched} == {"default"}
    assert len({r["template_id"] for r in enriched}) < len(enriched) / 4, "lines should share templates"
    # Whatever else came out validates too; published templates cover every template a line names.
    for topic in (ALERTS, ESCALATIONS, TEMPLATES):
        assert_valid(topic, cluster.docs(topic))
    templates = {v["template_id"]: v for v in cluster.docs(TEMPLATES)}
    assert {r["template_id"] for r in enriched} <= set(templates)


def test_a_burst_raises_one_alert_per_window_and_template(cluster: Topics, worker: StreamerProcess) -> None:
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
    cluster.produce(LOGS, records[:30])
    cluster.produce(LOGS, [*records[30:60], (service.encode(), orjson.dumps(quiet))])
    cluster.produce(LOGS, records[60:])

    enriched = cluster.docs(ENRICHED, until=91, match=lambda v: v["service"] == service)
    assert len(enriched) == 91
    [template_id] = {r["template_id"] for r in enriched if r["severity"] == "error"}
    alerts = [v for v in cluster.docs(ALERTS) if v["service"] == service]
    assert_valid(ALERTS, alerts)
    bursts = [a for a in alerts if a["kind"] == "burst"]
    assert sorted(a["window_start"] for a in bursts) == [iso(first), iso(second)]
    for alert in bursts:
        assert alert["template_id"] == template_id
        assert alert["count"] >= 20 and alert["severity"] == "error"
        assert alert["sample"] and "ORD-" in alert["sample"][0]
    assert [a["kind"] for a in alerts].count("new_error_template") == 1
    escalations = [v for v in cluster.docs(ESCALATIONS) if v["labels"]["service"] == service]
    assert_valid(ESCALATIONS, escalations)
    codes = sorted(r["code"] for e in escalations for r in e["reasons"])
    assert codes == ["error_burst", "error_burst", "new_error_template"]
    assert all(e["kind"] == "log" for e in escalations)


def test_a_new_error_template_escalates_once_with_redacted_samples(cluster: Topics, worker: StreamerProcess) -> None:
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

    cluster.produce(LOGS, [line(0)])
    [one] = cluster.docs(ENRICHED, until=1, match=lambda v: v["id"] == f"{service}-0")
    cluster.produce(LOGS, [line(1)])  # a separate batch: the worker has published the first one's outputs already
    [two] = cluster.docs(ENRICHED, until=1, match=lambda v: v["id"] == f"{service}-1")
    assert one["template_id"] == two["template_id"]
    assert email not in one["message"] and one["entities"]["pii"]

    escalations = [v for v in cluster.docs(ESCALATIONS) if v["labels"]["service"] == service]
    assert len(escalations) == 1
    [esc] = escalations
    assert_valid(ESCALATIONS, [esc])
    assert esc["id"] == f"{service}-0"
    assert [r["code"] for r in esc["reasons"]] == ["new_error_template"]
    assert esc["labels"]["template_id"] == one["template_id"]
    assert esc["context"]["count"] == 1 and esc["context"]["sample"]
    assert esc["pii_counts"]
    assert email not in orjson.dumps(esc).decode()
    alerts = [v for v in cluster.docs(ALERTS) if v["service"] == service]
    assert [a["kind"] for a in alerts] == ["new_error_template"]


def test_a_routed_line_arrives_on_its_team_topic_masked(cluster: Topics, worker: StreamerProcess) -> None:
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

    cluster.produce(LOGS, [line(0, "WARN"), line(1, "INFO"), line(2, "ERROR")])
    enriched = cluster.docs(ENRICHED, until=3, match=lambda v: v["id"].startswith(f"route-{run}-"))
    routed = cluster.docs(PAYMENTS, until=2, match=lambda v: v["id"].startswith(f"route-{run}-"))
    assert worker.alive, "worker died"
    by_id = {r["id"]: r for r in enriched}
    assert by_id[f"route-{run}-0"]["routes"] == [PAYMENTS] and "routes" not in by_id[f"route-{run}-1"]
    assert sorted(r["id"] for r in routed) == [f"route-{run}-0", f"route-{run}-2"]  # info stays off the team topic
    assert_valid(PAYMENTS, routed)
    raw = [m.value for m in cluster.read(PAYMENTS) if m.value is not None and run.encode() in m.value]
    assert len(raw) == 2 and all(email.encode() not in v for v in raw)
    for record in routed:
        assert "[EMAIL_1]" in record["message"] and "pii_values" not in record["entities"]
        assert record["template_id"] == by_id[record["id"]]["template_id"]


def test_undecodable_lines_go_to_the_dead_letter_topic_and_the_worker_keeps_going(
    cluster: Topics, worker: StreamerProcess
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
    # Readable, if odd: digits that int() and float() refuse leave the level and time to inference.
    odd = {"id": f"{service}-odd", "service": service, "message": "odd digits", "level": "\u00b2", "ts": "\u00b2"}
    good.append((service.encode(), orjson.dumps(odd)))
    records: list[Record] = []
    for i, (key, (value, _)) in enumerate(bad.items()):
        records.append((key.encode(), value))
        records.append(good[i % len(good)])
    cluster.produce(LOGS, records)

    dead = cluster.docs(DEADLETTER, until=len(bad), match=lambda v: v["raw"]["key"] in bad)
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

    ids = {f"{service}-{i}" for i in range(5)} | {f"{service}-odd"}
    enriched = cluster.docs(ENRICHED, until=len(ids), match=lambda v: v["id"] in ids)
    assert {r["id"] for r in enriched} == ids
    assert worker.alive, "worker died on bad input"


def test_restarts_keep_template_ids_and_do_not_alert_again(
    topic_factory: TopicFactory, worker_factory: WorkerFactory
) -> None:
    """A template generalised before a restart still takes its lines after it: loaded, not mined again."""
    cluster = topic_factory(LOG_TOPICS, label="logrestart")
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

    first = log_worker(worker_factory, cluster, group, "first")
    try:
        cluster.produce(LOGS, [line(t, i) for i, t in enumerate(("alpha", "bravo", "charlie"))])
        cluster.docs(ENRICHED, until=3, match=lambda v: v["service"] == service)
        cluster.produce(LOGS, [line("delta", 3)])
        [before] = cluster.docs(ENRICHED, until=1, match=lambda v: v["id"] == f"{service}-delta")
    finally:
        assert first.terminate() == 0, first.log_tail(100)
    assert "<*>" in before["template"], before["template"]  # three tenants made the position a parameter
    alerts_before = [v for v in cluster.docs(ALERTS) if v["service"] == service]
    assert alerts_before

    second = log_worker(worker_factory, cluster, group, "second")
    try:
        cluster.produce(LOGS, [line("echo", 4)])
        [after] = cluster.docs(ENRICHED, until=1, match=lambda v: v["id"] == f"{service}-echo", timeout=180)
    finally:
        assert second.terminate() == 0, second.log_tail(100)
    assert after["template_id"] == before["template_id"]
    assert after["template"] == before["template"]
    alerts_after = [v for v in cluster.docs(ALERTS) if v["service"] == service]
    assert alerts_after == alerts_before, "a restarted worker alerted again on a known template"
    # Nothing of the first run was processed again by the second (offsets were committed).
    ids = [v["id"] for v in cluster.docs(ENRICHED) if v["service"] == service]
    assert sorted(ids) == sorted(f"{service}-{t}" for t in ("alpha", "bravo", "charlie", "delta", "echo"))


def test_a_worker_joining_mid_stream_takes_partitions_without_losing_or_repeating_lines(
    topic_factory: TopicFactory, worker_factory: WorkerFactory
) -> None:
    """Revoke drains and commits the batches in flight; what a fetch returned across the rebalance is put back."""
    cluster = topic_factory(LOG_TOPICS, label="logrebalance")
    group = f"test-logs-rebalance-{uuid.uuid4().hex[:8]}"
    records: list[Record] = []
    for line in demo_log_lines(60_000, seed=5):
        if isinstance(line, dict):
            records.append((str(line["service"]).encode(), orjson.dumps(line)))
        else:
            records.append((None, line.encode()))
    first = log_worker(worker_factory, cluster, group, "first")
    second = log_worker(worker_factory, cluster, group, "second", start=False)
    sent: set[tuple[int, int]] = set()
    try:
        sent |= set(cluster.produce(LOGS, records[:2000]))
        cluster.docs(ENRICHED, until=1, match=lambda v: True)
        second.start()
        # A backlog the first worker needs several seconds for: the second joins while batches are in flight.
        sent |= set(cluster.produce(LOGS, records[2000:]))
        cluster.docs(ENRICHED, until=len(sent), match=lambda v: True, timeout=300)
        # The group may settle after the backlog is done on a fast machine: stop only once it has.
        wait_until(lambda: "log partitions assigned" in second.log_text(), 120, "the second worker's partitions")
        assert first.alive and second.alive
    finally:
        codes = (first.terminate(), second.terminate())
    assert codes == (0, 0), first.log_tail(100) + second.log_tail(100)
    source = cluster.topic(LOGS)
    seen = [(v["source"]["partition"], v["source"]["offset"]) for v in cluster.docs(ENRICHED)]
    assert all(v["source"]["topic"] == source for v in cluster.docs(ENRICHED)[:10])
    assert set(seen) == sent, f"{len(sent - set(seen))} lines never came out"
    assert len(seen) == len(sent), f"{len(seen) - len(set(seen))} lines came out twice"
    assert "log partitions revoked" in first.log_text()
    assert "log partitions assigned" in second.log_text()


def test_produce_logs_from_a_file(cluster: Topics, tmp_path: Path) -> None:
    """``streamer produce logs --file``: objects re-encoded, text lines as they are, keyed by service."""
    service = f"shipper-{word()}"
    doc = {"timestamp": "2026-03-02T10:00:00Z", "level": "warn", "service": service, "message": "slow disk"}
    text = f"2026-03-02T10:00:01Z ERROR [{service}] payment failed"
    bare = f"just a line {word()}"
    path = tmp_path / "logs.txt"
    path.write_bytes(b"\n".join([orjson.dumps(doc), text.encode(), b"", bare.encode()]) + b"\n")
    done = run_streamer("produce", "logs", "--file", str(path), env=streamer_env(cluster))
    assert done.returncode == 0, done.stderr[-2000:]

    records = {m.value: m.key for m in cluster.read(LOGS) if m.value is not None}
    assert records[orjson.dumps(doc)] == service.encode()
    assert records[text.encode()] == service.encode()
    assert records[bare.encode()] is None
