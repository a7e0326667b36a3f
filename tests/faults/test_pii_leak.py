"""PII stays in: VIP tickets full of known personal data escalate with none of it in the escalation topic
or in the worker's logs; clean texts are not redacted for nothing.

A seeded corpus (``STREAMER_FAULTS_PII_N`` tickets, default 300) carries 1 to 4 planted values each:
emails, phones in several national and international formats, card numbers (Luhn-valid, printed in the
usual groupings), IBANs (mod-97-valid, compact and grouped) and IPv4/IPv6 addresses. Every ticket is from
a VIP customer, so every one escalates to ``llm.escalations.v1`` (the large model's input). The worker
logs at DEBUG to its stderr, which the test reads. Then clean texts (hand-written banking-support
sentences full of look-alikes: amounts, dates, order and tracking numbers, versions, times) and demo
tickets generated without PII go through the same worker: any redaction there is a false positive.
"""

from __future__ import annotations

import random
import string
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.demo import demo_tickets, valid_iban, valid_luhn_card

from .conftest import ESCALATIONS, Tally, WorkerProcess, env_int, make_cluster, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(900)]

D = string.digits


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(D) for _ in range(n))


def phone(rng: random.Random) -> str:
    return rng.choice(
        [
            lambda: f"+44 7700 900{digits(rng, 3)}",
            lambda: f"+1 (202) 555-0{digits(rng, 3)}",
            lambda: f"+1 202-555-0{digits(rng, 3)}",
            lambda: f"+49 151 {digits(rng, 8)}",
            lambda: f"+33 6 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
            lambda: f"+353 87 {digits(rng, 3)} {digits(rng, 4)}",
            lambda: f"(415) 555-{digits(rng, 4)}",
            lambda: f"415-555-{digits(rng, 4)}",
            lambda: f"07700 900{digits(rng, 3)}",
            lambda: f"030/{digits(rng, 7)}",
            lambda: f"0{rng.randint(1, 7)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
            lambda: f"0176 {digits(rng, 8)}",
            lambda: f"0044 20 7946 {digits(rng, 4)}",
        ]
    )()


def card(rng: random.Random) -> str:
    number = valid_luhn_card(rng)
    style = rng.randrange(3)
    if style == 0:
        return number
    sep = " " if style == 1 else "-"
    if len(number) == 15:  # Amex prints 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def iban(rng: random.Random) -> str:
    value = valid_iban(rng, rng.choice(["DE", "GB", "FR", "NL", "ES", "IT", "AT", "BE", "PL", "CH"]))
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def email(rng: random.Random) -> str:
    first = rng.choice(["jane", "omar", "li", "anna-maria", "j.o'neil", "ZOE", "kofi"])
    last = rng.choice(["doe", "haddad", "wei", "schmidt", "okafor", "nakamura"])
    tag = rng.choice(["", "+support", "+2024", "_01"])
    domain = rng.choice(["example.com", "mail.example.org", "example.co.uk", "sub.example.net"])
    return f"{first}.{last}{tag}@{domain}".replace("'", "")


def ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    groups = [f"{rng.randrange(1, 0xFFFF):x}" for _ in range(5)]
    return f"2001:db8:{groups[0]}:{groups[1]}::{groups[2]}:{groups[3]}"


MAKERS = {"EMAIL": email, "PHONE": phone, "CARD": card, "IBAN": iban, "IP": ip}
SENTENCES = {
    "EMAIL": ["Please write to me at {v} instead.", "My login email is {v}.", "CC {v} on the reply, please."],
    "PHONE": ["Call me back on {v} after 5pm.", "My mobile number is {v}.", "You can reach me by phone: {v}."],
    "CARD": ["The charge was on my card {v}.", "Refund it to card number {v} please.", "I paid with {v} twice."],
    "IBAN": ["Send the refund to IBAN {v}.", "My account is {v}, please use that.", "Bank details: {v}."],
    "IP": ["I was logging in from {v} when it locked me out.", "Your firewall blocked {v} yesterday."],
}
OPENERS = [
    "I was charged twice for my subscription this month and I want the duplicate refunded.",
    "My account got locked after I changed my password and I can't get back in.",
    "The card payment for order ORD-481516 failed but the money left my account.",
    "Please close my account and delete my personal data.",
    "Your app keeps crashing when I open the statements page.",
]

CLEAN_TEXTS = [
    "I was charged 49.99 EUR twice on 2024-03-14, please refund one of the payments.",
    "My order ORD-778812 from 12/03/2024 still shows as processing after 10 days.",
    "Tracking number 1Z999AA10123456784 hasn't updated since Monday.",
    "The app version 4.2.1.7 crashes on start since the update on 3 May.",
    "I sent 1,250.00 USD at 14:35 and it still isn't in the recipient's account.",
    "Why is there a 2.5% fee on my top up of 300 pounds?",
    "Invoice no. 0123 456 789 shows the wrong amount, it should be 120.00.",
    "My card was declined at the ATM at 09:15 this morning, error code 51.",
    "I'd like to change my plan from Basic to Premium starting 01.04.2024.",
    "Exchange rate on my transfer was 1.0834, the site showed 1.0912 at the time.",
    "The refund of 19.90 for order #10045 never arrived.",
    "I got error E-4021 when trying to verify my identity in the app.",
    "My virtual card stopped working after 3 failed attempts, how do I unblock it?",
    "The direct debit for 75.00 on the 15th was taken twice.",
    "Build 2024.3.1 of the desktop app won't sync, I'm on macOS 14.4.1.",
    "Top up pending for over 2 hours, reference TX-20240314-0042.",
    "Please explain the 3 transactions of 0.01 on my statement dated 2024/02/29.",
    "I requested a new PIN 5 days ago and it hasn't come by post.",
    "The cash withdrawal of 200 at 23:59 on 31 Dec was charged a fee of 2.00.",
    "Ticket 55123 was closed without an answer, please reopen it.",
    "Can I get a statement for Q1 2024 (January to March) as a PDF?",
    "Order 1234567 arrived damaged, box 2 of 3 was crushed.",
    "Your API returns 503 from 10:00 to 10:20 UTC every day, request id 7f3a9c2e.",
    "My salary of 2,340.55 was sent on the 28th but is still not visible.",
    "I tried to pay 12 times between 8.30 and 9.00 and every attempt failed.",
    "The beneficiary's bank says the transfer ref 99812 never arrived.",
    "How long does a SEPA transfer take? I sent it on Friday at 4pm.",
    "Apple Pay keeps saying the card can't be added, iOS 17.4 on an iPhone 13.",
    "My contactless limit is 100 but a payment of 45.50 was refused.",
    "Please cancel subscription SUB-00912 before the renewal on 1 June.",
]


def clean_tickets(run: str) -> list[dict[str, Any]]:
    tickets = [
        {
            "id": f"CLEAN-{run}-{i}",
            "created_at": "2026-11-28T09:00:00Z",
            "body": text,
            "customer": {"id": f"C-{i}", "tier": "vip"},
        }
        for i, text in enumerate(CLEAN_TEXTS)
    ]
    for i, t in enumerate(demo_tickets(400, seed=4242)):
        if t.get("metadata", {}).get("expected", {}).get("pii"):
            continue
        t["id"] = f"CLEANDEMO-{run}-{i}"
        t["customer"] = {"id": f"C-D{i}", "tier": "vip"}
        tickets.append(t)
    return tickets


def pii_corpus(rng: random.Random, n: int, run: str) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, str]]]]:
    """Tickets and, per ticket id, the planted (kind, value) pairs."""
    tickets: list[dict[str, Any]] = []
    planted: dict[str, list[tuple[str, str]]] = {}
    kinds = list(MAKERS)
    for i in range(n):
        chosen = rng.sample(kinds, rng.randint(1, 4))
        values = [(kind, MAKERS[kind](rng)) for kind in chosen]
        sentences = [rng.choice(SENTENCES[kind]).format(v=value) for kind, value in values]
        body = " ".join([rng.choice(OPENERS), *sentences, "Thanks."])
        tid = f"PII-{run}-{i}"
        doc: dict[str, Any] = {
            "id": tid,
            "created_at": "2026-11-28T09:00:00Z",
            "channel": rng.choice(["email", "chat", "web"]),
            "body": body,
            "customer": {"id": f"C-{i}", "tier": "vip", "name": "Jane Doe"},
        }
        if rng.random() < 0.3:  # some in the subject too
            _, value = values[0]
            doc["subject"] = f"Urgent - {value}"
        tickets.append(doc)
        planted[tid] = values
    return tickets, planted


def compact(value: str) -> str:
    return "".join(ch for ch in value if ch.isalnum() or ch in "@.:")


def test_pii_never_reaches_the_escalation_topic_or_the_logs(
    kafka_bootstrap: str, test_bundle: Path, tmp_path: Path, workers: list[WorkerProcess], rng: random.Random
) -> None:
    n = env_int("PII_N", 300)
    cluster = make_cluster(kafka_bootstrap, "pii")
    run = uuid.uuid4().hex[:6]
    tickets, planted = pii_corpus(rng, n, run)
    clean = clean_tickets(run)
    every = tickets + clean
    rng.shuffle(every)

    worker = WorkerProcess(
        "pii", cluster, test_bundle, tmp_path / "w", group=f"faults-pii-{run}", env={"STREAMER_LOG_LEVEL": "DEBUG"}
    )
    workers.append(worker)
    ids = {t["id"].encode() for t in every}
    with Tally(cluster, [ESCALATIONS], keep=[ESCALATIONS]) as tally:
        worker.start()
        cluster.produce((t["id"].encode(), orjson.dumps(t)) for t in every)
        tally.wait(lambda: tally.covered(ids) == len(ids), 600, alive=[worker], what=f"{len(ids)} escalations")
        code = worker.terminate()
        _, _, seen = tally.snapshot(ESCALATIONS)
    logs = worker.log_text()
    escalations = {s.value["id"]: s.value for s in seen if s.value}

    leaked_topic: list[tuple[str, str, str]] = []
    leaked_logs: list[tuple[str, str]] = []
    planted_per_kind: dict[str, int] = {}
    detected_per_kind: dict[str, int] = {}
    for tid, values in planted.items():
        record = escalations[tid]
        blob = orjson.dumps(record).decode()
        for kind, value in values:
            planted_per_kind[kind] = planted_per_kind.get(kind, 0) + 1
            if value in blob or compact(value) in compact(blob):
                leaked_topic.append((tid, kind, value))
            if value in logs or (len(compact(value)) > 8 and compact(value) in logs):
                leaked_logs.append((kind, value))
        counts = record["pii_counts"]
        for kind in {k for k, _ in values}:
            want = sum(1 for k, _ in values if k == kind)
            detected_per_kind[kind] = detected_per_kind.get(kind, 0) + min(want, counts.get(kind, 0))
    planted_total = sum(planted_per_kind.values())
    recall = 1 - len(leaked_topic) / planted_total
    typed_recall = sum(detected_per_kind.values()) / planted_total

    clean_hits = {t["id"]: escalations[t["id"]]["pii_counts"] for t in clean if escalations[t["id"]]["pii_counts"]}
    fp_rate = len(clean_hits) / len(clean)
    examples = []
    for t in clean:
        if t["id"] in clean_hits and len(examples) < 5:
            examples.append(escalations[t["id"]]["redacted_text"][:160])
    report(
        "PII kept in",
        {
            "PII tickets (VIP)": f"{len(tickets)}, {planted_total} values {dict(sorted(planted_per_kind.items()))}",
            "escalated": f"{sum(1 for tid in planted if tid in escalations)} of {len(tickets)}",
            "planted values in llm.escalations.v1": len(leaked_topic),
            "planted values in the worker's logs (DEBUG)": f"{len(leaked_logs)} ({len(logs.splitlines())} log lines)",
            "redaction recall (value gone)": f"{recall:.2%}",
            "recall with the right kind": f"{typed_recall:.2%} {dict(sorted(detected_per_kind.items()))}",
            "clean texts": f"{len(clean)} ({len(CLEAN_TEXTS)} hand-written look-alikes, "
            f"{len(clean) - len(CLEAN_TEXTS)} demo tickets without PII)",
            "false positives (clean texts redacted)": f"{len(clean_hits)} ({fp_rate:.2%}) "
            f"{list(clean_hits.values())[:5]}",
            "false-positive examples": examples,
            "worker exit": code,
        },
    )
    assert not leaked_topic, leaked_topic[:5]
    assert not leaked_logs, leaked_logs[:5]
    assert fp_rate <= 0.02, clean_hits
    assert code == 0
