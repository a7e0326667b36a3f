"""The ticket worker as a process on the real broker: every input comes out enriched or dead-lettered.

One worker serves the module; each test sends its own tickets (unique ids) and reads what came out.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.demo import demo_tickets, valid_iban, valid_luhn_card
from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.settings import Settings
from streamer.topics import SchemaRegistry, load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
MAX_EVENT_BYTES = 20_000


class Cluster:
    """The module's topics (behind a unique prefix) and small produce/consume helpers."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.catalog = load_catalog(REPO / "topics" / "topics.yaml")

    def topic(self, name: str) -> str:
        return self.prefix + name

    def produce(self, records: list[tuple[bytes, bytes]], topic: str = "support.tickets.v1") -> None:
        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=2_000_000)
            await producer.start()
            try:
                for key, value in records:
                    await producer.send(self.topic(topic), value, key=key)
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(go())

    def consume(self, topic: str, until: int, *, match: Any = None, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Records of ``topic`` (from the beginning) for which ``match`` is true, until ``until`` are found."""

        async def go() -> list[dict[str, Any]]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            found: list[dict[str, Any]] = []
            try:
                parts = await topic_partitions(consumer, self.topic(topic))
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                deadline = time.monotonic() + timeout
                while len(found) < until and time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        for m in messages:
                            value = orjson.loads(m.value)
                            if match is None or match(value, m):
                                found.append(value)
                return found
            finally:
                await consumer.stop()

        return asyncio.run(go())


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str) -> Cluster:
    prefix = f"t.worker.{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topics_dir=REPO / "topics")
    catalog = load_catalog(settings.topics_file)
    asyncio.run(apply_topics(settings, catalog.topics.values()))
    return Cluster(kafka_bootstrap, prefix)


@pytest.fixture(scope="module")
def worker(
    cluster: Cluster, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": cluster.bootstrap,
        "STREAMER_TOPIC_PREFIX": cluster.prefix,
        "STREAMER_GROUP_ID": f"test-worker-{uuid.uuid4().hex[:8]}",
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
        "STREAMER_MAX_BATCH": "16",
        "STREAMER_LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env, stdout=log, stderr=log)
        yield proc
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.returncode not in (0, -15):
        print(log_path.read_text()[-5000:])


def tag() -> str:
    return uuid.uuid4().hex[:6]


def test_n_tickets_in_n_enriched_out_with_valid_records(cluster: Cluster, worker: subprocess.Popen[bytes]) -> None:
    run = tag()
    tickets = list(demo_tickets(40, seed=3))
    for t in tickets:
        t["id"] = f"{t['id']}-{run}"
    ids = {t["id"] for t in tickets}
    cluster.produce([(t["id"].encode(), orjson.dumps(t)) for t in tickets])

    enriched = cluster.consume("support.tickets.enriched.v1", len(ids), match=lambda v, m: v["id"] in ids)
    assert worker.poll() is None, "worker died"
    assert sorted(r["id"] for r in enriched) == sorted(ids)
    for record in enriched:
        assert REGISTRY.errors("enriched_ticket.v1.json", record) == []
        assert record["model"]["name"]
        assert record["source"]["topic"] == cluster.topic("support.tickets.v1")

    # Each enriched record is in every queue its routes name, and escalations carry no raw PII.
    by_route: dict[str, set[str]] = {}
    for record in enriched:
        for route in record["triage"]["routes"]:
            by_route.setdefault(route, set()).add(record["id"])
    for route, route_ids in by_route.items():
        got = cluster.consume(route, len(route_ids), match=lambda v, m, ids=route_ids: v["id"] in ids)
        assert {r["id"] for r in got} == route_ids, route

    # near-duplicates of an escalation already sent are folded into it, not sent again
    escalated = {
        r["id"]
        for r in enriched
        if r["triage"]["escalation"]["escalate"] and "duplicate_of" not in r["triage"]["escalation"]
    }
    escalations = cluster.consume("llm.escalations.v1", len(escalated), match=lambda v, m: v["id"] in ids)
    assert {e["id"] for e in escalations} == escalated
    for e in escalations:
        assert REGISTRY.errors("escalation.v1.json", e) == []


def test_vip_ticket_with_pii_escalates_redacted_to_the_right_topics(
    cluster: Cluster, worker: subprocess.Popen[bytes]
) -> None:
    import random

    rng = random.Random(5)
    card, iban = valid_luhn_card(rng), valid_iban(rng)
    email, phone = "jane.doe@example.org", "+44 7700 900123"
    ticket = {
        "id": f"TCK-VIP-{tag()}",
        "created_at": "2026-11-28T09:00:00Z",
        "channel": "email",
        "subject": "Refund for a double charge",
        "body": (
            f"Hello, I was charged twice for my subscription. Please refund the duplicate payment to my card "
            f"{card} or to IBAN {iban}. You can reach me at {email} or {phone}."
        ),
        "customer": {"id": "C-9", "tier": "vip"},
    }
    cluster.produce([(ticket["id"].encode(), orjson.dumps(ticket))])
    [enriched] = cluster.consume("support.tickets.enriched.v1", 1, match=lambda v, m: v["id"] == ticket["id"])
    reasons = {r["code"] for r in enriched["triage"]["escalation"]["reasons"]}
    assert "vip_customer" in reasons
    assert enriched["triage"]["pii"]["counts"]
    [esc] = cluster.consume("llm.escalations.v1", 1, match=lambda v, m: v["id"] == ticket["id"])
    blob = orjson.dumps(esc).decode()
    for secret in (card, iban, email, "7700 900123"):
        assert secret not in blob
    assert esc["customer_tier"] == "vip"
    assert any(r["code"] == "vip_customer" for r in esc["reasons"])


def test_malformed_inputs_go_to_the_dead_letter_topic_and_good_ones_still_flow(
    cluster: Cluster, worker: subprocess.Popen[bytes]
) -> None:
    run = tag()
    good = list(demo_tickets(10, seed=9))
    for t in good:
        t["id"] = f"{t['id']}-{run}"
    base = {"created_at": "2026-11-28T09:00:00Z", "body": "hello"}
    bad: dict[str, tuple[bytes, str]] = {
        f"bad-json-{run}": (b'{"id": "x", "body": ', "invalid_json"),
        f"bad-type-{run}": (orjson.dumps({**base, "id": f"bad-type-{run}", "body": 42}), "schema"),
        f"bad-missing-{run}": (orjson.dumps({"id": f"bad-missing-{run}", "body": "no created_at"}), "schema"),
        f"bad-utf8-{run}": (b'{"id": "\xff\xfe", "body": "x"}', "invalid_utf8"),
        f"bad-size-{run}": (orjson.dumps({**base, "id": f"bad-size-{run}", "body": "x" * 30_000}), "oversize"),
        f"bad-array-{run}": (b"[1, 2, 3]", "not_an_object"),
    }
    records: list[tuple[bytes, bytes]] = []
    bad_items = list(bad.items())
    for i, t in enumerate(good):
        records.append((t["id"].encode(), orjson.dumps(t)))
        if i < len(bad_items):
            key, (value, _) = bad_items[i]
            records.append((key.encode(), value))
    cluster.produce(records)

    dead = cluster.consume("streamer.deadletter.v1", len(bad), match=lambda v, m: (m.key or b"").decode() in bad)
    got = {d["raw"]["key"]: d for d in dead}
    assert set(got) == set(bad)
    for key, (value, code) in bad.items():
        record = got[key]
        assert record["error"]["code"] == code, key
        assert record["error"]["message"]
        assert REGISTRY.errors("deadletter.v1.json", record) == []
        if record["raw"]["encoding"] == "base64":
            assert base64.b64decode(record["raw"]["value"]) == value
        elif not record["raw"]["cut"]:
            assert record["raw"]["value"].encode() == value
    assert got[f"bad-type-{run}"]["error"]["field"] == "body"

    ids = {t["id"] for t in good}
    enriched = cluster.consume("support.tickets.enriched.v1", len(ids), match=lambda v, m: v["id"] in ids)
    assert {r["id"] for r in enriched} == ids
    assert worker.poll() is None, "worker died on bad input"


def test_clients_we_did_not_write_in_and_out(cluster: Cluster, worker: subprocess.Popen[bytes]) -> None:
    """A ticket produced by Kafka's console producer comes out enriched for Kafka's console consumer."""
    from streamer.kafka.local import console_tool_cmd

    ticket_id = f"TCK-CONSOLE-{tag()}"
    ticket = {
        "id": ticket_id,
        "created_at": "2026-11-28T09:00:00Z",
        "body": "My package from order ORD-778812 has not arrived after two weeks, where is it?",
        "customer": {"id": "C-1", "tier": "pro"},
    }
    line = f"{ticket_id}\t{orjson.dumps(ticket).decode()}\n"
    producer = console_tool_cmd(
        "console-producer",
        [
            "--bootstrap-server",
            cluster.bootstrap,
            "--topic",
            cluster.topic("support.tickets.v1"),
            "--property",
            "parse.key=true",
        ],
    )
    subprocess.run(producer, input=line.encode(), check=True, timeout=90, capture_output=True)

    consumer = console_tool_cmd(
        "console-consumer",
        [
            "--bootstrap-server",
            cluster.bootstrap,
            "--topic",
            cluster.topic("support.tickets.enriched.v1"),
            "--from-beginning",
            "--property",
            "print.key=true",
            "--timeout-ms",
            "60000",
        ],
    )
    with subprocess.Popen(consumer, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        found = None
        deadline = time.monotonic() + 90
        for raw in proc.stdout:
            key, _, value = raw.decode().rstrip("\n").partition("\t")
            if key == ticket_id:
                found = orjson.loads(value)
                break
            if time.monotonic() > deadline:
                break
        proc.kill()
    assert found is not None, "enriched ticket not seen by the console consumer"
    assert found["triage"]["intent"]["label"] in {"order_status", "shipping_delay"}
    assert REGISTRY.errors("enriched_ticket.v1.json", found) == []
