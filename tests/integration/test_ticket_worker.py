"""The ticket worker as a process on the real broker: every input comes out enriched or dead-lettered.

One worker serves the module; each test sends its own tickets (unique ids) and reads what came out.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import REPO, Topics
from harness.processes import StreamerProcess

from streamer.demo import demo_tickets, valid_iban, valid_luhn_card
from streamer.topics import TICKETS, SchemaRegistry

pytestmark = pytest.mark.kafka

REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
MAX_EVENT_BYTES = 20_000


@pytest.fixture(scope="module")
def cluster(module_topic_factory: TopicFactory) -> Topics:
    return module_topic_factory(label="worker")


@pytest.fixture(scope="module")
def worker(cluster: Topics, module_worker_factory: WorkerFactory) -> StreamerProcess:
    return module_worker_factory(
        cluster,
        name="worker",
        group=f"test-worker-{uuid.uuid4().hex[:8]}",
        only=None,
        env={"STREAMER_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES), "STREAMER_MAX_BATCH": "16"},
    )


def tag() -> str:
    return uuid.uuid4().hex[:6]


def test_n_tickets_in_n_enriched_out_with_valid_records(cluster: Topics, worker: StreamerProcess) -> None:
    run = tag()
    tickets = list(demo_tickets(40, seed=3))
    for t in tickets:
        t["id"] = f"{t['id']}-{run}"
    ids = {t["id"] for t in tickets}
    cluster.produce(TICKETS, [(t["id"].encode(), orjson.dumps(t)) for t in tickets])

    enriched = cluster.docs("support.tickets.enriched.v1", until=len(ids), match=lambda v: v["id"] in ids)
    assert worker.alive, "worker died"
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
        got = cluster.docs(route, until=len(route_ids), match=lambda v, ids=route_ids: v["id"] in ids)
        assert {r["id"] for r in got} == route_ids, route

    # near-duplicates of an escalation already sent are folded into it, not sent again
    escalated = {
        r["id"]
        for r in enriched
        if r["triage"]["escalation"]["escalate"] and "duplicate_of" not in r["triage"]["escalation"]
    }
    escalations = cluster.docs("llm.escalations.v1", until=len(escalated), match=lambda v: v["id"] in ids)
    assert {e["id"] for e in escalations} == escalated
    for e in escalations:
        assert REGISTRY.errors("escalation.v1.json", e) == []


def test_vip_ticket_with_pii_escalates_redacted_to_the_right_topics(cluster: Topics, worker: StreamerProcess) -> None:
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
    cluster.produce(TICKETS, [(ticket["id"].encode(), orjson.dumps(ticket))])
    [enriched] = cluster.docs("support.tickets.enriched.v1", until=1, match=lambda v: v["id"] == ticket["id"])
    reasons = {r["code"] for r in enriched["triage"]["escalation"]["reasons"]}
    assert "vip_customer" in reasons
    assert enriched["triage"]["pii"]["counts"]
    [esc] = cluster.docs("llm.escalations.v1", until=1, match=lambda v: v["id"] == ticket["id"])
    blob = orjson.dumps(esc).decode()
    for secret in (card, iban, email, "7700 900123"):
        assert secret not in blob
    assert esc["customer_tier"] == "vip"
    assert any(r["code"] == "vip_customer" for r in esc["reasons"])


def test_malformed_inputs_go_to_the_dead_letter_topic_and_good_ones_still_flow(
    cluster: Topics, worker: StreamerProcess
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
        # a 600 kB key: over the size limit with its value, and the dead letter copies only 4 KiB of it
        f"bad-key-{run}-" + "k" * 600_000: (b'{"id": ', "oversize"),
    }
    records: list[tuple[bytes, bytes]] = []
    bad_items = list(bad.items())
    for i, t in enumerate(good):
        records.append((t["id"].encode(), orjson.dumps(t)))
        if i < len(bad_items):
            key, (value, _) = bad_items[i]
            records.append((key.encode(), value))
    cluster.produce(TICKETS, records)

    dead = cluster.read("streamer.deadletter.v1", until=len(bad), match=lambda m: (m.key or b"").decode() in bad)
    got = {(m.key or b"").decode(): orjson.loads(m.value) for m in dead}
    assert set(got) == set(bad)
    for key, (value, code) in bad.items():
        record = got[key]
        assert record["error"]["code"] == code, key[:40]
        assert record["error"]["message"]
        assert REGISTRY.errors("deadletter.v1.json", record) == []
        if record["raw"]["encoding"] == "base64":
            assert base64.b64decode(record["raw"]["value"]) == value
        elif not record["raw"]["cut"]:
            assert record["raw"]["value"].encode() == value
    assert got[f"bad-type-{run}"]["error"]["field"] == "body"
    cut = next(record["raw"] for key, record in got.items() if key.startswith(f"bad-key-{run}"))
    assert cut["key_cut"] is True and len(cut["key"]) == 4096

    ids = {t["id"] for t in good}
    enriched = cluster.docs("support.tickets.enriched.v1", until=len(ids), match=lambda v: v["id"] in ids)
    assert {r["id"] for r in enriched} == ids
    assert worker.alive, "worker died on bad input"


def test_clients_we_did_not_write_in_and_out(cluster: Topics, worker: StreamerProcess) -> None:
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
