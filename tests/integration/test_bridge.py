"""The large-model bridge on the real broker against a fake OpenAI-compatible endpoint.

Each test has topics of its own (a unique prefix) and a fresh fake endpoint; the bridge runs in the test's
event loop, except where it must die for real (SIGKILL of a bridge process).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes.openai_server import FakeOpenAI
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import Topics, all_ids
from harness.processes import StreamerProcess, streamer_env

from streamer.bridge.feedback import export_feedback
from streamer.bridge.llm import CircuitState
from streamer.bridge.prompt import LabelSet
from streamer.bridge.service import Bridge
from streamer.models import bundle as bundle_mod
from streamer.models.data import read_examples
from streamer.settings import Settings
from streamer.topics import DEADLETTER, ESCALATIONS, LLM_RESPONSES, SchemaRegistry

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
KEY = "sk-integration-5e1d0c9b8a7f3e21"
INTENTS = ("refund_request", "order_status", "card_arrival", "password_reset", "bug_report")
LABELS = LabelSet(heads={"intent": INTENTS})


@dataclass
class Env:
    topics: Topics
    fake: FakeOpenAI
    bundle_dir: Path

    @property
    def settings(self) -> Settings:
        return self.topics.settings


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY).up()
    yield server
    server.close()


@pytest.fixture
def env(topic_factory: TopicFactory, fake: FakeOpenAI, unique_name: Callable[[str], str], tmp_path: Path) -> Env:
    # The label set normally comes from the workers' bundle; a manifest is all the bridge reads of it.
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    manifest = {
        "format": bundle_mod.FORMAT,
        "format_version": bundle_mod.FORMAT_VERSION,
        "heads": {"intent": {"labels": list(INTENTS)}, "priority": {"labels": ["urgent", "high", "normal", "low"]}},
    }
    (bundle_dir / bundle_mod.MANIFEST).write_text(json.dumps(manifest))
    topics = topic_factory(
        [ESCALATIONS, LLM_RESPONSES, DEADLETTER],
        partitions={ESCALATIONS: 3, LLM_RESPONSES: 3, DEADLETTER: 1},
        bundle_dir=bundle_dir,
        bridge_group_id=unique_name("bridge"),
        llm_base_url=fake.base_url,
        llm_api_key=KEY,  # type: ignore[arg-type]
        llm_model="big-model",
        llm_rate_per_s=0,
        llm_max_concurrency=4,
        llm_backoff_initial_s=0.05,
        llm_backoff_max_s=0.4,
        llm_max_retries=4,
        llm_circuit_failures=4,
        llm_circuit_reset_s=1.0,
        llm_timeout_s=5,
        shutdown_timeout_s=5,
        bridge_metrics_port=0,
    )
    return Env(topics, fake, bundle_dir)


def bridge_process_env(env: Env, **extra: str) -> dict[str, str]:
    """The settings of a ``streamer bridge`` process on this test's topics and fake endpoint, plus ``extra``."""
    s = env.settings
    return streamer_env(
        env.topics,
        STREAMER_BUNDLE_DIR=str(env.bundle_dir),
        STREAMER_BRIDGE_GROUP_ID=s.bridge_group_id,
        STREAMER_LLM_BASE_URL=s.llm_base_url,
        STREAMER_LLM_API_KEY=KEY,
        STREAMER_LLM_RATE_PER_S="0",
        STREAMER_BRIDGE_METRICS_PORT="0",
        **extra,
    )


def escalation(record_id: str, text: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": record_id,
        "kind": "ticket",
        "source": {"topic": "support.tickets.v1", "partition": 0, "offset": 1, "timestamp_ms": None},
        "reasons": [{"code": "small_margin", "detail": "top-2 intent margin 0.03 < 0.10"}],
        "redacted_text": text,
        "candidates": [{"label": "refund_request", "confidence": 0.44}, {"label": "card_arrival", "confidence": 0.41}],
        "labels": {"intent": "refund_request"},
        "model": {"name": "default", "version": "t1"},
        "escalated_at": "2026-11-28T09:00:00.000Z",
    }
    doc.update(fields)
    assert REGISTRY.errors("escalation.v1.json", doc) == []
    return doc


def tickets(run: str, count: int, want: str = "order_status") -> list[dict[str, Any]]:
    return [escalation(f"{run}-{i}", f"Ticket {i} of {run}: where is my parcel? want: {want}") for i in range(count)]


async def produce(topics: Topics, records: list[dict[str, Any] | tuple[bytes, bytes]]) -> None:
    """Escalations (keyed by id) or raw (key, value) pairs onto the escalation topic."""
    await topics.aproduce(
        ESCALATIONS, [r if isinstance(r, tuple) else (r["id"].encode(), orjson.dumps(r)) for r in records]
    )


async def consume(
    topics: Topics, topic: str, until: int, timeout: float = 90.0, ids: set[str] | None = None
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Records of ``topic`` from the beginning, until ``until`` are there, or every one of ``ids`` (or the
    time is up)."""
    found = await topics.aread(topic, until=until if ids is None else all_ids(ids), timeout=timeout)
    return [(m.key, m.json()) for m in found]


@asynccontextmanager
async def bridge_running(settings: Settings, max_in_flight: int | None = None) -> AsyncIterator[Bridge]:
    bridge = Bridge(settings, labels=LABELS)
    if max_in_flight is not None:
        bridge.max_in_flight = max_in_flight
    ready = asyncio.Event()
    task = asyncio.create_task(bridge.run(ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raises what stopped it
    assert ready.is_set(), "bridge did not join its group"
    try:
        yield bridge
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 60)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


async def test_answers_land_keyed_by_id_and_feed_back_as_training_data(
    env: Env, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    docs = [
        *tickets("a", 9),
        escalation("a-sub", "It never came. want: card_arrival", redacted_subject="Card missing"),
        escalation("a-other", "Can you recommend a good restaurant? want: other"),
    ]
    async with bridge_running(env.settings):
        await produce(env.topics, docs)  # type: ignore[arg-type]
        answers = await consume(env.topics, LLM_RESPONSES, len(docs))
    ids = {d["id"] for d in docs}
    assert {a["id"] for _, a in answers} == ids
    for key, answer in answers:
        assert key == answer["id"].encode()
        assert REGISTRY.errors("llm_response.v1.json", answer) == []
        assert answer["source"]["topic"] == env.settings.topic(ESCALATIONS)
        assert answer["usage"]["total_tokens"] > 0 and answer["model"] == "big-model"
    by_id = {a["id"]: a for _, a in answers}
    assert by_id["a-0"]["intent"] == "order_status"
    assert by_id["a-sub"]["intent"] == "card_arrival" and by_id["a-other"]["intent"] == "other"

    # the key went to the endpoint as a bearer token and nowhere else
    assert {r.headers["Authorization"] for r in env.fake.requests} == {f"Bearer {KEY}"}
    assert all(r.body["response_format"]["type"] == "json_schema" for r in env.fake.requests)
    out, err = capfd.readouterr()
    assert KEY not in out + err

    # answers joined with their escalations: training data that models build reads
    feedback = tmp_path / "feedback.jsonl"
    report = await export_feedback(env.settings, since, feedback)
    assert report.written == 10 and report.skipped == {"other": 1}
    lines = [json.loads(line) for line in feedback.read_text().splitlines()]
    assert {
        "text": "Card missing\nIt never came. want: card_arrival",
        "label": "card_arrival",
        "source": "large-model",
    } in lines
    texts, labels = read_examples(feedback)
    assert len(texts) == 10 and set(labels) == {"order_status", "card_arrival"}


async def test_429_and_5xx_bursts_are_retried_and_nothing_is_lost(env: Env) -> None:
    env.fake.fail_next(429, 8, Retry_After="0.2")
    env.fake.fail_next(500, 5)
    env.fake.fail_next(502, 2)
    env.fake.fail_next(429, 3, retry_after_ms="100")
    docs = tickets("b", 12)
    async with bridge_running(env.settings) as bridge:
        await produce(env.topics, docs)  # type: ignore[arg-type]
        answers = await consume(env.topics, LLM_RESPONSES, len(docs))
        dead = await consume(env.topics, DEADLETTER, 1, timeout=1)
    assert {a["id"] for _, a in answers} == {d["id"] for d in docs}
    assert dead == []
    assert env.fake.count(429) == 11 and env.fake.count(500) == 5 and env.fake.count(502) == 2
    assert sum(a["attempts"] for _, a in answers) == env.fake.count()  # every request accounted for
    assert bridge.stats["answered"] == 12


async def test_back_pressure_bounds_the_records_in_flight(env: Env) -> None:
    env.fake.hang_s = 0.5
    docs = tickets("g", 10)
    peak = 0
    async with bridge_running(env.settings, max_in_flight=3) as bridge:
        await produce(env.topics, docs)  # type: ignore[arg-type]
        consumer = asyncio.create_task(consume(env.topics, LLM_RESPONSES, len(docs)))
        while not consumer.done():
            peak = max(peak, len(bridge._tracker))
            await asyncio.sleep(0.02)
        answers = consumer.result()
    assert {a["id"] for _, a in answers} == {d["id"] for d in docs}
    assert peak == 3


async def test_dead_endpoint_opens_the_circuit_and_the_bridge_recovers(env: Env) -> None:
    env.fake.down()
    docs = tickets("c", 6)
    async with bridge_running(env.settings) as bridge:
        await produce(env.topics, docs)  # type: ignore[arg-type]
        assert await wait_until(lambda: bridge.client.breaker.state is not CircuitState.CLOSED, 30)
        sample = bridge.metrics.registry.get_sample_value
        failed_before = sample("streamer_llm_requests_total", {"outcome": "connection"}) or 0
        await asyncio.sleep(3)  # the endpoint stays down: six waiting records, one probe per cool-down
        failed = (sample("streamer_llm_requests_total", {"outcome": "connection"}) or 0) - failed_before
        assert 1 <= failed <= 4
        assert await consume(env.topics, LLM_RESPONSES, 1, timeout=1) == []
        assert sample("streamer_llm_circuit_state") in (1.0, 2.0)
        env.fake.up()
        answers = await consume(env.topics, LLM_RESPONSES, len(docs))
        assert bridge.client.breaker.state is CircuitState.CLOSED
    assert {a["id"] for _, a in answers} == {d["id"] for d in docs}
    assert await consume(env.topics, DEADLETTER, 1, timeout=1) == []


async def test_malformed_answers_and_undecodable_escalations_go_to_the_dead_letter_topic(env: Env) -> None:
    good = tickets("d", 3)
    bad = [
        escalation("d-prose", "MALFORMED: answer in prose"),
        escalation("d-label", "want: teleportation"),
    ]
    async with bridge_running(env.settings):
        await produce(env.topics, [*good, *bad, (b"d-garbage", b"{not json")])
        dead = await consume(env.topics, DEADLETTER, 3)
        answers = await consume(env.topics, LLM_RESPONSES, 3)
    assert {a["id"] for _, a in answers} == {d["id"] for d in good}
    by_key = {key: record for key, record in dead}
    assert set(by_key) == {b"d-prose", b"d-label", b"d-garbage"}
    for record in by_key.values():
        assert REGISTRY.errors("deadletter.v1.json", record) == []
        assert record["source"]["topic"] == env.settings.topic(ESCALATIONS)
    assert by_key[b"d-prose"]["error"]["code"] == "invalid_answer"
    assert by_key[b"d-prose"]["raw"]["value"] == "Sure! This looks like refund_request to me."
    assert by_key[b"d-label"]["error"] == {
        "code": "invalid_answer",
        "message": "intent: 'teleportation' is not one of the 6 allowed labels",
        "field": "intent",
    }
    assert by_key[b"d-garbage"]["error"]["code"] == "invalid_json"
    assert by_key[b"d-garbage"]["raw"]["value"] == "{not json"


async def test_escalation_carrying_pii_is_refused_and_never_sent(env: Env) -> None:
    email, phone, card = "jane.doe@example.org", "+44 7700 900123", "4111 1111 1111 1111"
    leaky = escalation("e-pii", f"Refund to card {card}, call {phone} or mail {email}. want: refund_request")
    good = tickets("e", 2)
    async with bridge_running(env.settings):
        await produce(env.topics, [leaky, *good])
        answers = await consume(env.topics, LLM_RESPONSES, 2)
        dead = await consume(env.topics, DEADLETTER, 1)
    assert {a["id"] for _, a in answers} == {d["id"] for d in good}
    [(key, record)] = dead
    assert key == b"e-pii" and record["error"]["code"] == "unredacted_pii"
    assert REGISTRY.errors("deadletter.v1.json", record) == []
    blob = orjson.dumps(record).decode()
    sent = "".join(orjson.dumps(r.body).decode() for r in env.fake.requests)
    for secret in (email, card, "7700 900123"):
        assert secret not in blob
        assert secret not in sent
    assert len(env.fake.requests) == 2


def test_a_killed_bridge_loses_nothing(env: Env, worker_factory: WorkerFactory) -> None:
    """SIGKILL with answers in flight: a new bridge process answers everything the dead one left."""
    variables = bridge_process_env(
        env,
        STREAMER_LLM_BACKOFF_INITIAL_S="0.05",
        STREAMER_LLM_BACKOFF_MAX_S="0.4",
        STREAMER_LOG_LEVEL="DEBUG",
    )
    env.fake.slow_s = 120  # answers to SLOW tickets hang until the bridge is killed
    docs = [escalation(f"f-slow-{i}", f"SLOW ticket {i}. want: bug_report") for i in range(2)] + tickets("f", 8)

    def start(name: str) -> StreamerProcess:
        return worker_factory.process(name, ["bridge"], variables, module="streamer.bridge")

    first = start("bridge-1")
    try:
        asyncio.run(produce(env.topics, docs))  # type: ignore[arg-type]
        answered = asyncio.run(consume(env.topics, LLM_RESPONSES, 8, timeout=120))
        assert {a["id"] for _, a in answered} == {d["id"] for d in docs[2:]}, first.log_tail()
        assert sum("SLOW" in r.user_text for r in env.fake.requests) == 2  # both in flight
    finally:
        first.kill9()
    env.fake.slow_s = 0
    second = start("bridge-2")
    try:
        everything = {d["id"] for d in docs}
        answers = asyncio.run(consume(env.topics, LLM_RESPONSES, 0, timeout=150, ids=everything))
        assert {a["id"] for _, a in answers} == everything, second.log_tail()
        assert second.alive
    finally:
        assert second.terminate(60) == 0
    for bridge in (first, second):
        assert KEY not in bridge.log_text()


def test_a_bridge_stopping_with_records_unanswered_exits_1_and_says_how_many(
    env: Env, worker_factory: WorkerFactory
) -> None:
    """SIGTERM while two answers hang past the grace period: not a clean stop, so not exit 0."""
    variables = bridge_process_env(env, STREAMER_SHUTDOWN_TIMEOUT_S="2")
    env.fake.slow_s = 120
    docs = [escalation(f"h-slow-{i}", f"SLOW ticket {i}. want: bug_report") for i in range(2)] + tickets("h", 3)
    bridge = worker_factory.process("bridge", ["bridge"], variables)
    try:
        asyncio.run(produce(env.topics, docs))  # type: ignore[arg-type]
        answered = asyncio.run(consume(env.topics, LLM_RESPONSES, 3, timeout=120))
        assert {a["id"] for _, a in answered} == {d["id"] for d in docs[2:]}, bridge.log_tail()
        deadline = time.monotonic() + 30
        while sum("SLOW" in r.user_text for r in env.fake.requests) < 2:
            assert time.monotonic() < deadline, "the slow requests never reached the endpoint"
            time.sleep(0.1)
        code = bridge.terminate(60)
    finally:
        if bridge.alive:
            bridge.kill9()
    lines = bridge.log_text().splitlines()
    assert code == 1, lines[-20:]
    assert lines[-1].startswith("streamer: error: bridge stopped with 2 escalation(s) unanswered after the 2 s")
