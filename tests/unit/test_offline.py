"""``streamer triage tickets|logs --file F``: the worker's outputs for a file, in the worker's order, under the
privacy policy, valid against the topics' schemas; no Kafka."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes.pii_corpus import compact, found_in, pii_log_lines, pii_tickets, returning_customers

from streamer.offline import log_file_outputs, ticket_file_outputs
from streamer.privacy import Pseudonymiser, load_policy
from streamer.settings import Settings
from streamer.topics import SchemaRegistry, load_catalog

REPO = Path(__file__).resolve().parents[2]
TOPICS = REPO / "topics"
CATALOG = load_catalog(TOPICS / "topics.yaml")
POLICY = load_policy(TOPICS / "topics.yaml", CATALOG.topics)
REGISTRY = SchemaRegistry(TOPICS / "schemas")


def schema_errors(topic: str, value: Any) -> list[str]:
    spec = CATALOG.topics[topic]
    assert spec.schema is not None
    return REGISTRY.errors(spec.schema, value)


def test_tickets_file_in_worker_order_under_the_policy(test_bundle: Path, tmp_path: Path) -> None:
    rng = random.Random(16)
    tickets, planted = pii_tickets(rng, 40, "off", returning_customers(rng))
    lines = [orjson.dumps(t) for t in tickets]
    lines.insert(7, b'{"id": "BAD-1", "body": "no created_at, mail me at jane@example.com"}')
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings(topics_dir=TOPICS, bundle_dir=test_bundle, pseudonym_key="k", max_batch=16)  # type: ignore[arg-type]

    outputs = list(ticket_file_outputs(settings, path))

    # Per batch: dead letters as decoding meets them, then per ticket enriched, its queues, its escalation.
    assert outputs[0]["topic"] == "streamer.deadletter.v1" and outputs[0]["key"] == "BAD-1"
    assert "jane@example.com" in outputs[0]["value"]["raw"]["value"]  # the policy keeps dead letters raw
    per_ticket: dict[str, list[str]] = {}
    for out in outputs[1:]:
        per_ticket.setdefault(out["key"], []).append(out["topic"])
        assert schema_errors(out["topic"], out["value"]) == [], out["topic"]
    assert list(per_ticket) == [t["id"] for t in tickets]  # input order
    for tid, topics in per_ticket.items():
        enriched = next(o["value"] for o in outputs if o["key"] == tid)
        assert topics == ["support.tickets.enriched.v1", *enriched["triage"]["routes"], "llm.escalations.v1"]

    # Values only where the policy keeps them; pseudonyms as the secret gives them.
    everything = [p for values in planted.values() for p in values]
    pseudo = Pseudonymiser(b"k", 1)
    for out in outputs[1:]:
        own = planted[out["key"]]
        kept = {compact(p.value) for p in own if POLICY.for_topic(out["topic"]).action(p.kind) == "keep"}
        assert {compact(p.value) for p in found_in(out["value"], everything)} <= kept, out["topic"]
        if out["topic"] == "support.tickets.enriched.v1":
            listed = {e["pseudonym"] for e in out["value"]["triage"]["pii"].get("values", [])}
            emails = {pseudo.token("EMAIL", p.value) for p in own if p.kind == "EMAIL"}
            assert emails <= listed


def test_one_phone_number_in_two_tickets_is_no_leak(test_bundle: Path, tmp_path: Path) -> None:
    """The seed on which the fault test flagged wrapped phones on the billing and urgent queues.

    Ticket 48 planted '+44 20\n7946 7194', ticket 145 '0044 20 7946 7194': one number written two ways.
    Billing keeps PHONE, so ticket 145's own number was there in clear, and the check read it as ticket
    48's value. The corpus now plants no value inside another, so every hit names its own ticket.
    """
    rng = random.Random(909288872)
    tickets, planted = pii_tickets(rng, 150, "seed", returning_customers(rng))
    compacts = {compact(p.value) for values in planted.values() for p in values}
    assert not [(a, b) for a in compacts for b in compacts if a != b and min(len(a), len(b)) >= 8 and a in b]
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(t) for t in tickets) + b"\n")
    settings = Settings(topics_dir=TOPICS, bundle_dir=test_bundle, pseudonym_key="k", max_batch=64)  # type: ignore[arg-type]

    everything = [p for values in planted.values() for p in values]
    kept_phones = 0
    for out in ticket_file_outputs(settings, path):
        if not out["topic"].startswith("support.queue."):
            continue
        own = planted[out["key"]]
        kept = {compact(p.value) for p in own if POLICY.for_topic(out["topic"]).action(p.kind) == "keep"}
        hits = {compact(p.value) for p in found_in(out["value"], everything)}
        assert hits <= kept, (out["topic"], out["key"], hits - kept)
        kept_phones += sum(1 for p in own if p.kind == "PHONE" and compact(p.value) in hits)
    assert kept_phones > 0  # the queues that keep phones do carry them in clear


def test_logs_file_through_the_command(test_bundle: Path, tmp_path: Path) -> None:
    rng = random.Random(61)
    lines, planted = pii_log_lines(rng, 120, returning_customers(rng))
    path = tmp_path / "app.log"
    path.write_bytes(b"\n".join(lines))
    env = {
        **os.environ,
        "STREAMER_TOPICS_DIR": str(TOPICS),
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_PSEUDONYM_KEY": "k",
        "STREAMER_LOG_FORMAT": "json",
        "STREAMER_LOG_HOLD_BATCH": "false",  # each batch's enriched records leave with it, in the order below
    }
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "triage", "logs", "--file", str(path)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = [orjson.loads(line) for line in proc.stdout.splitlines()]
    topics = [o["topic"] for o in outputs]
    assert topics.count("ops.logs.enriched.v1") == len(lines)
    # One batch: the worker sends enriched lines, alerts, escalations, templates, in that order, then the
    # copies the logs rules route to team topics, one run per topic, one copy per route a line lists.
    order = ["ops.logs.enriched.v1", "ops.alerts.v1", "llm.escalations.v1", "ops.log_templates.v1"]
    runs = [t for i, t in enumerate(topics) if i == 0 or topics[i - 1] != t]
    fixed = [t for t in order if t in topics]
    assert runs[: len(fixed)] == fixed
    teams = runs[len(fixed) :]
    assert teams and len(teams) == len(set(teams)) and all(t.startswith("team.") for t in teams)
    routes = [r for o in outputs if o["topic"] == "ops.logs.enriched.v1" for r in o["value"].get("routes", [])]
    assert sorted(routes) == sorted(t for t in topics if t.startswith("team."))
    assert {"ops.alerts.v1", "llm.escalations.v1", "ops.log_templates.v1"} <= set(topics)
    for out in outputs:
        assert set(out) == {"topic", "key", "value"}
        assert schema_errors(out["topic"], out["value"]) == [], out
        assert found_in(out["value"], planted) == [], out["topic"]
    ips = [ip for o in outputs if o["topic"] == "ops.logs.enriched.v1" for ip in o["value"]["entities"].get("ips", [])]
    assert ips and all(ip.startswith("[IP_k1_") for ip in ips)  # internal addresses by pseudonym, not in clear


@pytest.mark.parametrize("kind", ["tickets", "logs"])
def test_a_missing_file_is_one_line(kind: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "triage", kind, "--file", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STREAMER_TOPICS_DIR": str(TOPICS)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"streamer: error: no such file: {tmp_path / 'nope.jsonl'}"]


def test_logs_file_of_one_service_read_with_its_layout(test_bundle: Path, tmp_path: Path) -> None:
    """``--service`` keys every line with the service, so its ``STREAMER_LOG_LAYOUTS`` entry cuts the header;
    the held last batch is released at the end, so no line is missing."""
    layout = r"(?P<ts>[^;]+);(?P<tenant>\w+);(?P<level>\w+);(?P<msg>.*)"  # columns inference does not read
    levels = ["INFO", "WARN", "ERROR"]
    lines = [
        f"2026-12-05T08:{i // 60:02d}:{i % 60:02d}Z;tenant{i % 7};{levels[i % 3]};invoice {1000 + i} settled"
        for i in range(150)
    ]
    path = tmp_path / "billing.log"
    path.write_text("\n".join(lines) + "\n")
    settings = Settings(  # type: ignore[arg-type]
        topics_dir=TOPICS, bundle_dir=test_bundle, pseudonym_key="k", log_max_batch=64, log_layouts={"billing": layout}
    )
    assert settings.log_hold_batch  # the default: the last batch is held until the end of the file

    def enriched(service: str | None) -> list[dict[str, Any]]:
        outputs = log_file_outputs(settings, path, service=service)
        return [o["value"] for o in outputs if o["topic"] == "ops.logs.enriched.v1"]

    by_layout = enriched("billing")
    assert len(by_layout) == len(lines)
    assert [r["message"].split()[:2] for r in by_layout] == [["invoice", str(1000 + i)] for i in range(150)]
    severity = {"INFO": "info", "WARN": "warning", "ERROR": "error"}
    assert [r["severity"] for r in by_layout] == [severity[level] for level in levels * 50]
    assert all(r["service"] == "billing" for r in by_layout)
    assert len({r["template_id"] for r in by_layout}) == 1  # the varying header no longer splits the template
    unkeyed = enriched(None)  # without the service the layout does not apply: the header stays in the message
    assert len(unkeyed) == len(lines) and all(";" in r["message"] for r in unkeyed)
