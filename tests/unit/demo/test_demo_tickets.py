"""Demo tickets must be reproducible, follow the ticket contract, and carry PII that real detectors accept
(checksummed cards and IBANs), or demos and benchmarks prove nothing."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamer.demo import (
    demo_tickets,
    valid_iban,
    valid_luhn_card,
)

REPO = Path(__file__).resolve().parents[3]
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
