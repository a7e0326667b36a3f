"""Unit tests for streamer.demo: demo traffic must be reproducible, follow the ticket contract, and carry
PII that real detectors accept (checksummed cards and IBANs), or demos and benchmarks prove nothing."""

from __future__ import annotations

import http.server
import itertools
import json
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamer.demo import (
    STORY_BURST,
    codename,
    demo_log_lines,
    demo_log_story,
    demo_tickets,
    first_seen_error,
    valid_iban,
    valid_luhn_card,
)
from streamer.demo_report import DemoContext, DemoTally, percentile, render_summary
from streamer.logs.templates import TemplateMiner
from streamer.runner import _wait_until_ready
from streamer.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHANNELS = {"email", "chat", "web", "phone", "api"}
TIERS = {"free", "pro", "business", "enterprise", "vip"}
N = 2000


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return len(digits) >= 12 and total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b")
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
PHONE = re.compile(r"\+\d{1,3}[ \d-]{6,}\d|\b0\d{3} \d{6,8}\b")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


def pii_kinds(text: str) -> set[str]:
    """PII found by pattern, independently of what the generator says it inserted."""
    found = set()
    if EMAIL.search(text):
        found.add("email")
    if IBAN.search(text):
        found.add("iban")
    if any(luhn_ok(m.group()) for m in CARD.finditer(text)):
        found.add("card")
    if PHONE.search(text):
        found.add("phone")
    if IPV4.search(text):
        found.add("ip")
    return found


@pytest.fixture(scope="module")
def tickets() -> list[dict[str, Any]]:
    return list(demo_tickets(N, seed=7))


@pytest.fixture(scope="module")
def logs() -> list[dict[str, Any] | str]:
    return list(demo_log_lines(N, seed=7))


# --- tickets ---------------------------------------------------------------------------------------


def test_tickets_are_deterministic_per_seed() -> None:
    assert list(demo_tickets(200, seed=11)) == list(demo_tickets(200, seed=11))
    assert list(demo_tickets(200, seed=11)) != list(demo_tickets(200, seed=12))
    assert list(demo_tickets(40)) == list(demo_tickets(200))[:40]


def test_ticket_ids_are_unique(tickets: list[dict[str, Any]]) -> None:
    ids = [t["id"] for t in tickets]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"TCK-\d+", i) for i in ids)


def test_ticket_contract(tickets: list[dict[str, Any]]) -> None:
    allowed = {"id", "created_at", "channel", "subject", "body", "customer", "language", "metadata"}
    previous = datetime.min.replace(tzinfo=timezone.utc)
    for t in tickets:
        assert set(t) - allowed == set()
        assert {"id", "created_at", "channel", "subject", "body", "customer", "metadata"} <= set(t)
        created = datetime.fromisoformat(t["created_at"].replace("Z", "+00:00"))
        assert t["created_at"].endswith("Z") and created.utcoffset() == timezone.utc.utcoffset(None)
        assert created >= previous
        previous = created
        assert t["channel"] in CHANNELS
        assert isinstance(t["subject"], str) and t["subject"].strip()
        assert isinstance(t["body"], str) and t["body"].strip()
        assert set(t["customer"]) == {"id", "tier"}
        assert t["customer"]["id"].startswith("C-") and t["customer"]["tier"] in TIERS
        if "language" in t:
            assert re.fullmatch(r"[a-z]{2}", t["language"])
        assert isinstance(t["metadata"], dict)
        json.dumps(t)  # must survive the wire format


def test_tickets_match_the_topic_schema(tickets: list[dict[str, Any]]) -> None:
    schema = json.loads((REPO / "topics" / "schemas" / "ticket.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for t in tickets[:500]:
        validator.validate(t)


def test_traffic_mix_is_within_bounds(tickets: list[dict[str, Any]]) -> None:
    expected = [t["metadata"]["expected"] for t in tickets]
    multi = sum(e["multi_issue"] for e in expected) / N
    foreign = sum(t.get("language") in {"de", "es", "fr"} for t in tickets) / N
    assert 0.02 <= multi <= 0.09
    assert 0.01 <= foreign <= 0.06
    tiers = Counter(t["customer"]["tier"] for t in tickets)
    assert 0 < tiers["vip"] < 0.08 * N
    priorities = Counter(e["priority"] for e in expected)
    assert priorities["urgent"] >= 10 and priorities["low"] >= 10
    assert sum(e["sentiment"] == "negative" for e in expected) >= 50
    assert len({t["channel"] for t in tickets}) == len(CHANNELS)
    assert max(len(t["body"]) for t in tickets) > 3 * sorted(len(t["body"]) for t in tickets)[N // 2]


def test_pii_share_and_labels_agree_with_the_text(tickets: list[dict[str, Any]]) -> None:
    with_pii = 0
    for t in tickets:
        found = pii_kinds(t["body"])
        assert found == set(t["metadata"]["expected"]["pii"]), t["body"]
        with_pii += bool(found)
    assert 0.02 <= with_pii / N <= 0.09


def test_cards_and_ibans_in_tickets_pass_their_checksums(tickets: list[dict[str, Any]]) -> None:
    cards = ibans = 0
    for t in tickets:
        for m in CARD.finditer(t["body"]):
            assert luhn_ok(m.group()), m.group()
            cards += 1
        for m in IBAN.finditer(t["body"]):
            assert iban_ok(m.group()), m.group()
            ibans += 1
    assert cards > 0 and ibans > 0


def test_demo_text_is_not_copied_from_the_training_data(tickets: list[dict[str, Any]]) -> None:
    def norm(s: str) -> str:
        return " ".join(re.findall(r"[a-z']+", s.lower()))

    training = set()
    for name in ("intents", "priority", "sentiment"):
        text = resources.files("streamer").joinpath(f"resources/data/{name}.jsonl").read_text(encoding="utf-8")
        training |= {norm(json.loads(line)["text"]) for line in text.splitlines()}
    for t in tickets:
        for sentence in re.split(r"(?<=[.?!])\s+|\n+", t["body"]):
            if len(norm(sentence).split()) >= 4:
                assert norm(sentence) not in training, sentence


# --- checksummed identifiers -----------------------------------------------------------------------


def test_valid_luhn_card() -> None:
    rng = random.Random(3)
    for _ in range(500):
        card = valid_luhn_card(rng)
        assert card.isdigit() and len(card) in (15, 16)
        assert luhn_ok(card)
        broken = card[:-1] + str((int(card[-1]) + 1) % 10)
        assert not luhn_ok(broken)


@pytest.mark.parametrize("country", ["DE", "FR", "ES", "NL", "GB", "IT", "AT", "BE", "CH", "PL"])
def test_valid_iban(country: str) -> None:
    rng = random.Random(country)
    for _ in range(200):
        iban = valid_iban(rng, country)
        assert iban.startswith(country)
        assert iban_ok(iban)
        assert not iban_ok(iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:])
    assert len(valid_iban(random.Random(1), "DE")) == 22


def test_valid_iban_rejects_unknown_country() -> None:
    with pytest.raises(ValueError):
        valid_iban(random.Random(0), "XX")


# --- logs ------------------------------------------------------------------------------------------


def message(entry: dict[str, Any] | str) -> str:
    return entry["message"] if isinstance(entry, dict) else entry


def test_logs_are_deterministic_per_seed() -> None:
    assert list(demo_log_lines(300, seed=5)) == list(demo_log_lines(300, seed=5))
    assert list(demo_log_lines(300, seed=5)) != list(demo_log_lines(300, seed=6))
    assert list(demo_log_lines(50)) == list(demo_log_lines(300))[:50]


def test_logs_mix_records_and_text_lines(logs: list[dict[str, Any] | str]) -> None:
    assert len(logs) == N
    records = [e for e in logs if isinstance(e, dict)]
    lines = [e for e in logs if isinstance(e, str)]
    assert 0.2 * N < len(records) < 0.8 * N and len(records) + len(lines) == N
    for r in records:
        assert {"timestamp", "level", "service", "message"} <= set(r)
        assert all(isinstance(r[k], str) for k in ("timestamp", "level", "service", "message"))
    stamps = [datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for r in records]
    assert stamps == sorted(stamps)
    assert any(re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ ", s) for s in lines)  # syslog
    assert any(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR)", s) for s in lines)


def test_logs_repeat_templates_with_rare_ones_and_traces(logs: list[dict[str, Any] | str]) -> None:
    def mask(text: str) -> str:
        return re.sub(r"[0-9a-f]{6,}|\d+(\.\d+)*", "#", text.split("\n", 1)[0])

    templates = Counter(mask(message(e)) for e in logs)
    assert len(templates) < 0.5 * N  # mostly recurring templates
    assert sum(1 for c in templates.values() if c <= 2) >= 1  # and some rare ones
    traces = [m for m in map(message, logs) if "\n\tat " in m]
    assert traces and all(m.count("\n") >= 3 for m in traces)


def test_logs_contain_an_error_burst() -> None:
    entries = [message(e) for e in demo_log_lines(5000, seed=7)]
    masked = [re.sub(r"\d+", "#", m) for m in entries]
    longest = run = 1
    for a, b in itertools.pairwise(masked):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    assert longest >= 8


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        list(demo_tickets(-1))
    with pytest.raises(ValueError):
        list(demo_log_lines(-1))
    assert list(demo_tickets(0)) == [] and list(demo_log_lines(0)) == []


# --- the shipped data the demo is measured against --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "minimum"), [("intents", 30), ("priority", 60), ("sentiment", 80), ("log_incidents", 40)]
)
def test_shipped_data_loads_with_enough_examples_per_label(name: str, minimum: int) -> None:
    data = resources.files("streamer").joinpath(f"resources/data/{name}.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in data.splitlines()]
    assert all(set(r) == {"text", "label"} and r["text"].strip() for r in rows)
    counts = Counter(r["label"] for r in rows)
    assert min(counts.values()) >= minimum
    assert len({r["text"] for r in rows}) == len(rows)
    if name in ("intents", "log_incidents"):
        spec = yaml.safe_load(resources.files("streamer").joinpath(f"resources/data/{name}.yaml").read_text())
        assert set(spec) == set(counts)
        assert all(isinstance(v["description"], str) and len(v["examples"]) == 3 for v in spec.values())


def test_demo_waits_for_the_worker_ready_endpoint() -> None:
    """The demo sends traffic only once /ready answers 200, so its latency figure is not start-up time."""
    answers = iter([503, 503, 200])

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(next(answers, 200))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        settings = Settings(metrics_port=server.server_address[1])
        waited = _wait_until_ready(settings, worker, timeout=10)
        assert waited is not None and waited >= 0.4  # two 503s, 0.2 s apart
        assert _wait_until_ready(Settings(metrics_port=0), worker, timeout=10) is None
    finally:
        worker.kill()
        server.shutdown()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(SystemExit, match="exited with code 3"):
        _wait_until_ready(Settings(metrics_port=1), dead, timeout=10)


# --- the log story make run sends ---------------------------------------------------------------------

START = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def stamp(entry: dict[str, Any] | str) -> datetime:
    if isinstance(entry, dict):
        return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
    head = entry.split(" ", 1)[0]
    return datetime.fromisoformat(head.replace("Z", "+00:00")) if "T" in head else START


def test_log_lines_start_where_asked_and_keep_their_pace() -> None:
    lines = list(demo_log_lines(400, seed=3, start=START, mean_gap_ms=50))
    stamps = [stamp(e) for e in lines if isinstance(e, dict)]
    assert stamps[0] > START and stamps == sorted(stamps)
    assert stamps[-1] - START < timedelta(seconds=400 * 50 / 1000 * 2)  # a tenth of the default pace's span
    assert (
        list(demo_log_lines(400, seed=3)) != lines
        and list(demo_log_lines(50, seed=3)) == list(demo_log_lines(400, seed=3))[:50]
    )


def test_story_has_a_burst_a_first_seen_error_and_a_stack_trace() -> None:
    story = list(demo_log_story(600, start=START, tag="12345", burst=60))
    assert len(story) == 600 + 60 + 2
    texts = [message(e) for e in story]
    burst_lines = [
        e for e in story if isinstance(e, dict) and e["message"].startswith(STORY_BURST.text.split("{", 1)[0])
    ]
    assert len(burst_lines) >= 60
    burst_stamps = [stamp(e) for e in burst_lines[-60:]]
    assert burst_stamps[-1] - burst_stamps[0] < timedelta(seconds=30)  # within one 60 s burst window
    novel = [t for t in texts if t.startswith(first_seen_error("12345"))]
    assert len(novel) == 1
    assert any("\n\tat " in t for t in texts)
    stamps = [stamp(e) for e in story if isinstance(e, dict)]
    assert stamps == sorted(stamps) and stamps[0] > START
    assert story == list(demo_log_story(600, start=START, tag="12345", burst=60))


def test_every_tag_gives_a_template_no_other_tag_shares() -> None:
    """Three values in one position would merge into one template; the first word never does."""
    miner = TemplateMiner()
    tags = [f"{n:05d}" for n in range(8)]
    ids = {miner.add(first_seen_error(tag) + " by 12.50 USD").id for tag in tags}
    assert len(ids) == len(tags)
    assert len({codename(tag) for tag in tags}) == len(tags)
    assert all(codename(tag).isalpha() for tag in tags)


# --- the demo's tally and summary -------------------------------------------------------------------


def source(topic: str, partition: int, offset: int, ts: int | None = None) -> dict[str, Any]:
    return {"topic": topic, "partition": partition, "offset": offset, "timestamp_ms": ts}


def enriched_ticket(tid: str, intent: str, latency: float, expected: str) -> dict[str, Any]:
    return {
        "id": tid,
        "latency_ms": latency,
        "ticket": {"metadata": {"expected": {"intents": [expected]}}},
        "triage": {"intent": {"label": intent}, "routes": ["support.queue.billing.v1"]},
    }


def test_tally_counts_only_this_runs_records_per_path() -> None:
    starts = {("support.tickets.v1", 0): 10, ("ops.logs.v1", 0): 100, ("llm.escalations.v1", 0): 5}
    tally = DemoTally(
        starts=starts, tickets={"T1", "T2"}, ticket_malformed=1, logs_sent=2, log_malformed=1, logs_from_ms=1000
    )
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T1", "refund_request", 40, "refund_request"), 5)
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T1", "refund_request", 40, "refund_request"), 5)
    tally.observe("support.tickets.enriched.v1", enriched_ticket("OLD", "refund_request", 40, "x"), 5)
    assert tally.ticket.processed == 1 and not tally.done()
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T2", "order_status", 60, "refund_request"), 9)
    log = {
        "service": "checkout-api",
        "severity": "error",
        "template_id": "Tabc",
        "template": "Failed to price cart for order <*>",
        "message": "Failed to price cart\njava.lang.NullPointerException\n\tat x(X.java:1)",
        "entities": {"exception_types": ["java.lang.NullPointerException"]},
    }
    tally.observe("ops.logs.enriched.v1", {**log, "source": source("ops.logs.v1", 0, 99, 0)}, 50)  # earlier run
    tally.observe("ops.logs.enriched.v1", {**log, "source": source("ops.logs.v1", 0, 100, 20)}, 50)
    tally.observe("ops.logs.enriched.v1", {**log, "source": source("ops.logs.v1", 0, 101, 20)}, 80)
    dead = {"error": {"code": "invalid_json"}}
    tally.observe("streamer.deadletter.v1", {**dead, "source": source("support.tickets.v1", 0, 9)}, 0)  # earlier
    tally.observe("streamer.deadletter.v1", {**dead, "source": source("support.tickets.v1", 0, 12)}, 0)
    assert not tally.done()  # a log line is still unaccounted for
    invalid = {"error": {"code": "invalid_utf8"}, "source": source("ops.logs.v1", 0, 102)}
    tally.observe("streamer.deadletter.v1", invalid, 0)
    assert tally.done() and tally.triaged == tally.expected == 6
    assert (tally.ticket.dead, tally.log.dead) == ({"invalid_json": 1}, {"invalid_utf8": 1})
    assert tally.log.latency_ms == [30.0, 60.0] and tally.stack_traces == {"java.lang.NullPointerException": 2}
    assert (tally.agree, tally.judged) == (1, 2)

    reason = [{"code": "low_confidence", "detail": "0.31"}]
    tally.observe("llm.escalations.v1", {"id": "T2", "kind": "ticket", "reasons": reason}, 0)
    tally.observe("llm.escalations.v1", {"id": "OLD", "kind": "ticket", "reasons": reason}, 0)
    log_reason = [{"code": "error_burst", "detail": "x"}]
    log_src = source("ops.logs.v1", 0, 101)
    tally.observe("llm.escalations.v1", {"id": "L1", "kind": "log", "reasons": log_reason, "source": log_src}, 0)
    assert tally.escalation_ids == {"T2", "L1"} and tally.log.reasons == {"error_burst": 1}
    tally.observe("llm.responses.v1", {"id": "T2", "intent": "refund_request", "latency_ms": 900.0}, 0)
    tally.observe("llm.responses.v1", {"id": "OLD", "intent": "x"}, 0)
    assert tally.settled == 1 and tally.answers_earlier == 1
    bad_answer = {"id": "L1", "error": {"code": "invalid_answer"}, "source": source("llm.escalations.v1", 0, 7)}
    tally.observe("streamer.deadletter.v1", bad_answer, 0)
    assert tally.settled == 2 and tally.bridge_dead == {"L1": "invalid_answer"}

    tally.observe("ops.log_templates.v1", {"template_id": "Told", "template": "a", "first_seen_ms": 999}, 0)
    tally.observe("ops.log_templates.v1", {"template_id": "Tnew", "template": "b", "first_seen_ms": 1000}, 0)
    tally.observe("ops.alerts.v1", {"id": "burst:a", "kind": "burst", "service": "s", "template": "t", "count": 20}, 0)
    tally.observe("ops.alerts.v1", {"id": "burst:a", "kind": "burst", "service": "s", "template": "t", "count": 20}, 0)
    assert list(tally.new_templates) == ["Tnew"] and len(tally.alerts) == 1


def summary_of(tally: DemoTally, bridge: bool) -> str:
    ctx = DemoContext(
        bootstrap="127.0.0.1:9092",
        topics={"llm.escalations.v1": "dev.llm.escalations.v1", "ops.alerts.v1": "dev.ops.alerts.v1"},
        produce_started_ms=0,
        files={"worker log": "var/demo/R/worker.log", "replay report": "var/demo/R/replay.html"},
        bridge=bridge,
        llm_endpoint="http://127.0.0.1:8939/v1",
        replay="306 records re-run",
    )
    return render_summary(tally, ctx)


def test_summary_has_a_section_per_path_and_says_what_waits() -> None:
    tally = DemoTally(starts={("ops.logs.v1", 0): 0}, tickets={"T1"}, logs_sent=1)
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T1", "refund_request", 40, "refund_request"), 2000)
    reasons = [{"code": "vip_customer", "detail": "vip"}]
    tally.observe("llm.escalations.v1", {"id": "T1", "kind": "ticket", "reasons": reasons}, 0)
    alert = {"id": "a", "kind": "new_error_template", "service": "payments-worker", "template": "X failed", "count": 1}
    tally.observe("ops.alerts.v1", alert, 0)
    text = summary_of(tally, bridge=False)
    sections = [line for line in text.splitlines() if line.startswith("== ")]
    assert [s.split()[1] for s in sections] == ["Tickets", "Logs", "Large", "Replay", "Files", "Explore"]
    assert "enriched 1 in 2.0 s (0.5/s end to end)" in text
    assert "by reason: vip_customer 1" in text and "alerts: 1 (new_error_template 1)" in text
    assert "1 escalations of this run wait in dev.llm.escalations.v1" in text and "make llm-local" in text
    assert "kcat -b 127.0.0.1:9092 -C -e -t dev.ops.alerts.v1" in text
    assert "var/demo/R/replay.html" in text
    assert not any(line.lstrip().startswith("{") for line in text.splitlines())  # no JSON log lines

    tally.observe("llm.responses.v1", {"id": "T1", "intent": "refund_request", "latency_ms": 1200.0}, 0)
    answered = summary_of(tally, bridge=True)
    assert "answers received 1 of 1 escalations, 0 dead-lettered" in answered and "0 still open" in answered
    assert "answer latency p50 1200 ms" in answered and "wait in" not in answered


def test_percentile_by_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0 and percentile(list(map(float, range(100))), 0.99) == 99.0
