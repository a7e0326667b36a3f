"""PII appears only where the privacy policy keeps it, on every output topic; clean texts are not redacted
for nothing.

A seeded corpus (``STREAMER_FAULTS_PII_N`` tickets, default 500, and ``STREAMER_FAULTS_PII_LOG_N`` log lines,
default 600) carries planted values in more than 30 written formats (``tests/fakes/pii_corpus.py``): emails
plain, plus-addressed, with an apostrophe, quoted, IDN and punycode; phones in 14 national and international
layouts, one wrapped across a line break; cards and IBANs compact, grouped, dashed, in odd groups and wrapped;
IPv4, IPv6 and IPv6 with a zone; SSNs; in ticket subjects, bodies and metadata, and in JSON, text, syslog
and stack-trace log lines. A pool of returning customers' addresses recurs across tickets and log lines.

Every ticket is from a VIP customer, so every one escalates. One worker runs both paths with a pseudonym
secret and the shipped policy (``topics/topics.yaml``); the bridge answers every escalation through a fake
endpoint whose answers add planted values of their own (what a model might invent); ``streamer replay``
writes the tickets again to a replay topic. Then every record of every output topic is searched for every
planted value, as written and re-spaced: a value may appear only in a record of its own ticket, on a topic
whose policy keeps its kind. The worker's and the bridge's logs (DEBUG) must hold none. Clean texts
(hand-written look-alikes and demo tickets) go through the same worker: any redaction there is a false
positive.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes.openai_server import FakeOpenAI
from fakes.pii_corpus import FORMATS, Planted, compact, found_in, pii_log_lines, pii_tickets, returning_customers
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import Topics
from harness.processes import StreamerProcess, run_streamer, streamer_env

from streamer.demo import demo_tickets
from streamer.privacy import Pseudonymiser, load_policy
from streamer.runner import log_records
from streamer.topics import load_catalog

from .conftest import ESCALATIONS, FAUST_ENV, REPO, TICKETS, WORKER_ENV, Tally, env_int, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(1200)]

ENRICHED = "support.tickets.enriched.v1"
LOGS = "ops.logs.v1"
LOGS_ENRICHED = "ops.logs.enriched.v1"
ALERTS = "ops.alerts.v1"
TEMPLATES = "ops.log_templates.v1"
RESPONSES = "llm.responses.v1"
DEADLETTER = "streamer.deadletter.v1"
CATALOG = load_catalog(REPO / "topics" / "topics.yaml")
POLICY = load_policy(REPO / "topics" / "topics.yaml", CATALOG.topics)
QUEUES = sorted(t for t in CATALOG.topics if t.startswith("support.queue."))
#: Team log topics: routed log lines, each under its own policy.
LOG_TEAMS = sorted(t for t in CATALOG.topics if t.startswith("team.") and t.endswith(".logs.v1"))
KEY = "faults-pii-secret"

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


def read_topic(cluster: Topics, topic: str, expect: int, timeout: float = 300) -> list[Any]:
    """Every record of a topic created after the tally started (the replay's output)."""
    with Tally(cluster, [topic], keep=[topic]) as tally:
        tally.wait(lambda: tally.total(topic) >= expect, timeout, what=f"{expect} records on {topic}")
        return tally.snapshot(topic)[2]


def run_bridge(
    worker_factory: WorkerFactory, cluster: Topics, bundle: Path, fake: FakeOpenAI, group: str
) -> StreamerProcess:
    env = streamer_env(
        cluster,
        STREAMER_BUNDLE_DIR=str(bundle),
        STREAMER_BRIDGE_GROUP_ID=group,
        STREAMER_LLM_BASE_URL=fake.base_url,
        STREAMER_LLM_RATE_PER_S="0",
        STREAMER_LLM_MAX_CONCURRENCY="16",
        STREAMER_BRIDGE_METRICS_PORT="0",
        STREAMER_LOG_LEVEL="DEBUG",
    )
    return worker_factory.process("bridge", ["bridge"], env, module="streamer.bridge")


def run_replay(cluster: Topics, bundle: Path, run_id: str, workdir: Path) -> str:
    env = streamer_env(cluster, STREAMER_BUNDLE_DIR=str(bundle), STREAMER_PSEUDONYM_KEY=KEY)
    args = ["replay", "--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z", "--run-id", run_id]
    proc = run_streamer(*args, "--no-diff", "--no-progress", env=env, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return f"support.tickets.v1.replay.{run_id}"


def test_pii_appears_only_where_the_policy_keeps_it(
    topic_factory: TopicFactory, worker_factory: WorkerFactory, test_bundle: Path, tmp_path: Path, rng: random.Random
) -> None:
    n, n_logs = env_int("PII_N", 500), env_int("PII_LOG_N", 600)
    cluster = topic_factory(label="faults.pii")
    run = uuid.uuid4().hex[:6]
    pool = returning_customers(rng)
    tickets, planted = pii_tickets(rng, n, run, pool)
    clean = clean_tickets(run)
    every = tickets + clean
    rng.shuffle(every)
    lines, log_planted = pii_log_lines(rng, n_logs, pool)
    everything: list[Planted] = [p for values in planted.values() for p in values] + log_planted
    # The fake model "invents" planted values in its answers: llm.responses.v1 must mask them too.
    invented = [p for p in everything if p.kind in ("EMAIL", "PHONE")][:2]

    worker = worker_factory(
        cluster,
        name="pii",
        group=f"faults-pii-{run}",
        env={**FAUST_ENV, **WORKER_ENV, "STREAMER_LOG_LEVEL": "DEBUG", "STREAMER_PSEUDONYM_KEY": KEY},
        only=None,
        start=False,
    )
    fake = FakeOpenAI().up()
    fake.reply_extra = " Also contact " + " or ".join(p.value for p in invented) + "."
    bridge: StreamerProcess | None = None
    outputs = [ENRICHED, *QUEUES, ESCALATIONS, LOGS_ENRICHED, *LOG_TEAMS, ALERTS, TEMPLATES, RESPONSES, DEADLETTER]
    ids = {t["id"].encode() for t in every}
    try:
        with Tally(cluster, outputs, keep=outputs) as tally:
            worker.start()
            cluster.produce(TICKETS, ((t["id"].encode(), orjson.dumps(t)) for t in every))
            cluster.produce(LOGS, log_records(lines))
            tally.wait(
                lambda: (
                    tally.covered(ids, ENRICHED) == len(ids)
                    and tally.covered(ids, ESCALATIONS) == len(ids)
                    and tally.total(LOGS_ENRICHED) >= len(lines)
                ),
                600,
                alive=[worker],
                what=f"{len(ids)} tickets and {len(lines)} log lines",
            )
            code = worker.terminate()
            escalated = tally.keys(ESCALATIONS)
            bridge = run_bridge(worker_factory, cluster, test_bundle, fake, f"faults-pii-bridge-{run}")
            tally.wait(
                lambda: len(escalated - tally.keys(RESPONSES) - tally.keys(DEADLETTER)) == 0,
                600,
                what=f"answers to {len(escalated)} escalations",
            )
            bridge_code = bridge.terminate(60)
            seen = {topic: tally.snapshot(topic)[2] for topic in outputs}
    finally:
        if bridge is not None and bridge.alive:
            bridge.kill9()
        fake.close()
    replay_topic = run_replay(cluster, test_bundle, f"pii{run}", tmp_path)
    seen[replay_topic] = read_topic(cluster, replay_topic, len(every))

    # Every record of every topic, against every planted value.
    by_value: dict[str, set[str]] = defaultdict(set)  # compact value -> ticket ids that planted it
    for tid, values in planted.items():
        for p in values:
            by_value[compact(p.value)].add(tid)
    leaks: list[tuple[str, str, str, str]] = []
    kept_in_clear: Counter[str] = Counter()
    missing_kept: list[tuple[str, str, str]] = []
    records: Counter[str] = Counter()
    for topic, items in seen.items():
        policy = POLICY.for_topic(topic)
        for item in items:
            if item.value is None:
                continue
            records[topic] += 1
            owner = item.key.decode() if item.key else ""
            own = planted.get(owner, []) if topic != DEADLETTER else []
            kept = {compact(p.value) for p in own if policy.action(p.kind) == "keep"}
            for hit in found_in(item.value, everything):
                if compact(hit.value) in kept:
                    kept_in_clear[topic] += 1
                elif topic == DEADLETTER and item.value.get("error", {}).get("code") != "unredacted_pii":
                    continue  # dead letters keep raw input for replay, by policy (none expected here)
                else:
                    leaks.append((topic, owner, hit.format, hit.value))
            for p in own:
                if policy.action(p.kind) == "keep" and p not in found_in(item.value, [p]):
                    missing_kept.append((topic, owner, p.value))

    # One address, one pseudonym: the token the secret gives is in every record of its ticket on every
    # pseudonymising topic, and in the enriched log lines; returning customers' tokens recur across tickets.
    pseudo = Pseudonymiser(KEY.encode(), 1)
    wrong_pseudonyms: list[tuple[str, str, str]] = []
    pool_tokens: Counter[str] = Counter()
    for topic in (ENRICHED, "support.queue.engineering.v1", replay_topic):
        for item in seen[topic]:
            owner = item.key.decode() if item.key else ""
            text = orjson.dumps(item.value).decode()
            for p in planted.get(owner, []):
                if p.kind != "EMAIL":
                    continue
                token = pseudo.token("EMAIL", p.value)
                if token not in text:
                    wrong_pseudonyms.append((topic, owner, p.value))
                elif p.format == "email-returning" and topic == ENRICHED:
                    pool_tokens[token] += 1
    log_blob = "".join(orjson.dumps(item.value).decode() for item in seen[LOGS_ENRICHED])
    for p in log_planted:
        if p.kind == "EMAIL" and pseudo.token("EMAIL", p.value) not in log_blob:
            wrong_pseudonyms.append((LOGS_ENRICHED, "", p.value))
    joined = {t: c for t, c in pool_tokens.items() if c >= 2}
    in_logs_too = sum(1 for t in joined if t in log_blob)
    logs_text = worker.log_text() + (bridge.log_text() if bridge is not None else "")
    leaked_logs = [
        p for p in everything if p.value in logs_text or (len(compact(p.value)) > 8 and compact(p.value) in logs_text)
    ]

    escalations = {s.value["id"]: s.value for s in seen[ESCALATIONS] if s.value and s.value.get("kind") == "ticket"}
    planted_per_kind: Counter[str] = Counter()
    detected_per_kind: Counter[str] = Counter()
    for tid, values in planted.items():
        counts = escalations[tid]["pii_counts"]
        for kind in {p.kind for p in values}:
            want = sum(1 for p in values if p.kind == kind)
            planted_per_kind[kind] += want
            detected_per_kind[kind] += min(want, counts.get(kind, 0))
    planted_total = sum(planted_per_kind.values())
    leaked_escalations = sum(1 for topic, *_ in leaks if topic == ESCALATIONS)
    clean_hits = {t["id"]: escalations[t["id"]]["pii_counts"] for t in clean if escalations[t["id"]]["pii_counts"]}
    fp_rate = len(clean_hits) / len(clean)
    formats = {p.format for p in everything}
    report(
        "PII on every output topic",
        {
            "tickets (VIP) / log lines": f"{len(tickets)} / {len(lines)}",
            "planted values": f"{len(everything)} in {len(formats)} formats ({len(FORMATS)} ticket formats)",
            "records checked per topic": dict(sorted(records.items())),
            "planted values where the policy does not keep them": len(leaks),
            "kept in clear where the policy keeps them": dict(sorted(kept_in_clear.items())),
            "kept values missing": len(missing_kept),
            "planted values in the worker's and bridge's logs (DEBUG)": len(leaked_logs),
            "redaction recall (value gone from llm.escalations.v1)": f"{1 - leaked_escalations / planted_total:.2%}",
            "recall with the right kind": f"{sum(detected_per_kind.values()) / planted_total:.2%} "
            f"{dict(sorted(detected_per_kind.items()))}",
            "clean texts": f"{len(clean)} ({len(CLEAN_TEXTS)} hand-written look-alikes, "
            f"{len(clean) - len(CLEAN_TEXTS)} demo tickets without PII)",
            "false positives (clean texts redacted)": f"{len(clean_hits)} ({fp_rate:.2%}) "
            f"{list(clean_hits.values())[:5]}",
            "escalations answered / dead-lettered by the bridge": f"{len(seen[RESPONSES])} / "
            f"{sum(1 for s in seen[DEADLETTER] if s.value and s.value['source']['topic'].endswith(ESCALATIONS))}",
            "email pseudonyms not as the secret gives them": len(wrong_pseudonyms),
            "returning customers' tokens in 2+ tickets / also in log lines": f"{len(joined)} / {in_logs_too}",
            "worker / bridge exit": f"{code} / {bridge_code}",
        },
    )
    assert len(formats) >= 15
    assert not leaks, leaks[:10]
    assert not missing_kept, missing_kept[:10]
    assert not wrong_pseudonyms, wrong_pseudonyms[:10]
    assert joined, "returning customers' addresses should share a pseudonym across tickets"
    assert kept_in_clear, "the policy keeps contact details on team queues: some should be there in clear"
    assert not leaked_logs, leaked_logs[:5]
    assert records[RESPONSES] > 0 and records[replay_topic] >= len(every)
    assert sum(records[t] for t in LOG_TEAMS) > 0, "some log lines should be routed to team topics"
    assert fp_rate <= 0.02, clean_hits
    assert code == 0 and bridge_code == 0
