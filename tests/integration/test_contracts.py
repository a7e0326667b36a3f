"""Contracts downstream services rely on, on the real broker: CloudEvents headers on every output topic
and one W3C trace from the support platform through the worker, the bridge and the large model.

One flow serves the module: a worker process (both paths) exporting its spans over OTLP to a local receiver,
tickets and log lines in (one ticket with a ``traceparent``), the bridge in this process with an in-memory
span exporter and a fake OpenAI-compatible endpoint; then every output topic is read back with headers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from fakes.openai_server import FakeOpenAI
from fakes.otlp_receiver import OtlpReceiver, Span
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import CATALOG, aread_topics
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamer.bridge.service import Bridge
from streamer.demo import demo_log_lines, demo_tickets
from streamer.headers import SOURCE_BRIDGE, SOURCE_LOGS, SOURCE_TICKETS, TraceParent, event_type, header_map
from streamer.runner import log_records
from streamer.topics import (
    ALERTS,
    DEADLETTER,
    ESCALATIONS,
    LLM_RESPONSES,
    LOG_TEMPLATES,
    LOGS,
    LOGS_ENRICHED,
    TICKETS,
    TICKETS_ENRICHED,
)
from streamer.tracing import Tracing

pytestmark = pytest.mark.kafka

OUTPUTS = [name for name in CATALOG.topics if name not in (TICKETS, LOGS)]
TRACE_ID = uuid.uuid4().hex
PLATFORM_SPAN = uuid.uuid4().hex[:16]
TRACED = f"TRACED-{uuid.uuid4().hex[:6]}"


@dataclass
class Record:
    topic: str  # declared name (prefix removed)
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, bytes], ...]

    @property
    def doc(self) -> Any:
        return orjson.loads(self.value)


@dataclass
class Flow:
    prefix: str
    records: list[Record]
    worker_spans: list[Span]
    bridge_spans: list[ReadableSpan]
    endpoint_headers: list[dict[str, str]]
    counts: dict[str, int] = field(default_factory=dict)

    def of(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]


async def _read_all(bootstrap: str, prefix: str, quiet_s: float = 3.0) -> list[Record]:
    """Every output topic's records, until none came for ``quiet_s``."""
    found = await aread_topics(bootstrap, [prefix + name for name in OUTPUTS], quiet_s=quiet_s)
    return [
        Record(m.topic.removeprefix(prefix), m.key, m.value or b"", header_map(m.headers), m.headers) for m in found
    ]


def _count(records: list[Record], topic: str, ids: set[str]) -> int:
    return len({r.doc.get("id") for r in records if r.topic == topic} & ids)


@pytest.fixture(scope="module")
def flow(
    kafka_bootstrap: str,
    test_bundle: Path,
    module_topic_factory: TopicFactory,
    module_worker_factory: WorkerFactory,
) -> Iterator[Flow]:
    topics = module_topic_factory(
        label="contracts",
        bundle_dir=test_bundle,
        bridge_group_id=f"bridge-{uuid.uuid4().hex[:8]}",
        llm_base_url="http://127.0.0.1:1/v1",
        llm_model="big-model",
        llm_rate_per_s=0,
        llm_timeout_s=10,
        shutdown_timeout_s=5,
        bridge_metrics_port=0,
    )
    settings, prefix = topics.settings, topics.prefix
    receiver = OtlpReceiver()
    fake = FakeOpenAI().up()
    env = {
        "STREAMER_MAX_BATCH": "16",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = module_worker_factory(topics, group=f"contracts-{uuid.uuid4().hex[:8]}", only=None, env=env)
    try:
        traced = {
            "id": TRACED,
            "created_at": "2026-11-28T10:00:00Z",
            "channel": "email",
            "subject": "Charged twice",
            "body": "I was charged twice for my last order, please refund the duplicate payment.",
            "customer": {"id": "C-1", "tier": "vip"},
            "language": "en",
        }
        tickets = list(demo_tickets(24, seed=11))
        for t in tickets:
            t["id"] = f"{t['id']}-{prefix}"
        parent = [("traceparent", f"00-{TRACE_ID}-{PLATFORM_SPAN}-01".encode())]
        ticket_records: list[tuple[bytes | None, bytes, list[Any]]] = [
            (TRACED.encode(), orjson.dumps(traced), parent),
            *((t["id"].encode(), orjson.dumps(t), []) for t in tickets),
            (b"broken", b"{not json", []),
        ]
        lines = [(k, v, []) for k, v in log_records(demo_log_lines(300, seed=5))]
        topics.produce(TICKETS, ticket_records)
        topics.produce(LOGS, lines)
        ticket_ids = {TRACED, *(t["id"] for t in tickets)}

        async def run_bridge() -> list[Record]:
            bridge = Bridge(settings.model_copy(update={"llm_base_url": fake.base_url}), tracing=Tracing(provider))
            task = asyncio.create_task(bridge.run())
            deadline = time.monotonic() + 180
            records: list[Record] = []
            try:
                while time.monotonic() < deadline:
                    assert worker.alive, worker.log_tail()
                    assert not task.done() or task.result() is None
                    records = await _read_all(kafka_bootstrap, prefix, quiet_s=1.0)
                    done = (
                        _count(records, TICKETS_ENRICHED, ticket_ids) == len(ticket_ids)
                        and len([r for r in records if r.topic == LOGS_ENRICHED]) == len(lines)
                        and _count(records, LLM_RESPONSES, {TRACED}) == 1
                    )
                    if done:
                        break
                    await asyncio.sleep(1)
            finally:
                bridge.stop()
                await asyncio.wait_for(task, 60)
            return records

        asyncio.run(run_bridge())
        records = asyncio.run(_read_all(kafka_bootstrap, prefix))
        # the worker exports in the background: wait until its spans of the traced ticket are in
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {s.name for s in receiver.snapshot() if s.trace_id == TRACE_ID}
            if sum(name.startswith("send ") for name in names) >= 3 and f"receive {prefix}{TICKETS}" in names:
                break
            time.sleep(0.5)
        time.sleep(1)
        yield Flow(
            prefix,
            records,
            receiver.snapshot(),
            list(exporter.get_finished_spans()),
            [r.headers for r in fake.requests],
        )
    finally:
        worker.terminate(30)
        fake.close()
        receiver.close()
        provider.shutdown()


def _trace(record: Record) -> TraceParent:
    parsed = TraceParent.parse(record.headers.get("traceparent"))
    assert parsed is not None, record.headers
    return parsed


def test_a_ticket_keeps_its_trace_through_worker_bridge_and_large_model(flow: Flow) -> None:
    mine = [r for r in flow.records if r.doc.get("id") == TRACED]
    topics = {r.topic for r in mine}
    assert {TICKETS_ENRICHED, "support.queue.billing.v1", ESCALATIONS, LLM_RESPONSES} <= topics, topics
    for record in mine:
        assert _trace(record).trace_id == TRACE_ID, record.topic
    [escalation] = [r for r in mine if r.topic == ESCALATIONS]
    [answer] = [r for r in mine if r.topic == LLM_RESPONSES]
    assert escalation.headers["ce_subject"] == TRACED == answer.headers["ce_subject"]

    # the worker's spans: platform -> receive -> send (one per output); the batch span links to the receive
    prefix = flow.prefix
    spans = {s.span_id: s for s in flow.worker_spans}
    [receive] = [s for s in flow.worker_spans if s.trace_id == TRACE_ID and s.name == f"receive {prefix}{TICKETS}"]
    assert receive.parent_span_id == PLATFORM_SPAN and receive.service == "streamer-worker"
    assert receive.attributes["messaging.system"] == "kafka"
    assert receive.attributes["messaging.destination.name"] == prefix + TICKETS
    for record in (r for r in mine if r.topic != LLM_RESPONSES):
        send = spans[_trace(record).span_id]  # each output names its own send span
        assert send.name == f"send {prefix}{record.topic}" and send.parent_span_id == receive.span_id
        assert send.attributes["messaging.operation.type"] == "send"
    [batch] = [s for s in flow.worker_spans if s.name == "triage batch" and (TRACE_ID, receive.span_id) in s.links]
    assert batch.parent_span_id is None and batch.trace_id != TRACE_ID
    models = [s for s in flow.worker_spans if s.name == "model" and s.parent_span_id == batch.span_id]
    assert len(models) == 1 and models[0].trace_id == batch.trace_id

    # the bridge's: escalation's send span -> receive -> chat (the endpoint's parent) and send (the answer's)
    bridge = {f"{s.context.span_id:016x}": s for s in flow.bridge_spans if f"{s.context.trace_id:032x}" == TRACE_ID}
    [b_receive] = [s for s in bridge.values() if s.name == f"receive {prefix}{ESCALATIONS}"]
    assert b_receive.parent is not None and f"{b_receive.parent.span_id:016x}" == _trace(escalation).span_id
    [chat] = [s for s in bridge.values() if s.name == "chat big-model"]
    assert chat.parent is not None and chat.parent.span_id == b_receive.context.span_id
    assert chat.attributes is not None and chat.attributes["gen_ai.request.model"] == "big-model"
    sent = [h["traceparent"] for h in flow.endpoint_headers if h.get("traceparent", "").split("-")[1:2] == [TRACE_ID]]
    assert sent and {TraceParent.parse(t).span_id for t in sent} == {f"{chat.context.span_id:016x}"}  # type: ignore[union-attr]
    b_send = bridge[_trace(answer).span_id]
    assert b_send.name == f"send {prefix}{LLM_RESPONSES}"
    assert b_send.parent is not None and b_send.parent.span_id == b_receive.context.span_id

    # one trace: every span of the ticket's trace has its parent in the trace, back to the platform's span
    ids = {s.span_id for s in flow.worker_spans if s.trace_id == TRACE_ID} | set(bridge)
    parents = [s.parent_span_id for s in flow.worker_spans if s.trace_id == TRACE_ID]
    parents += [f"{s.parent.span_id:016x}" for s in bridge.values() if s.parent is not None]
    assert set(parents) <= ids | {PLATFORM_SPAN}


def test_a_ticket_without_traceparent_starts_its_own_trace(flow: Flow) -> None:
    by_ticket: dict[str, set[str]] = {}
    for record in flow.records:
        if record.topic in (TICKETS_ENRICHED, ESCALATIONS) and record.doc.get("id", "").endswith(flow.prefix):
            by_ticket.setdefault(record.doc["id"], set()).add(_trace(record).trace_id)
    assert len(by_ticket) == 24
    assert all(len(traces) == 1 for traces in by_ticket.values())
    assert len({next(iter(t)) for t in by_ticket.values()} | {TRACE_ID}) == 25


def test_a_cloudevents_consumer_decodes_every_output_topic(flow: Flow) -> None:
    sources = {
        TICKETS_ENRICHED: {SOURCE_TICKETS},
        ESCALATIONS: {SOURCE_TICKETS, SOURCE_LOGS},
        DEADLETTER: {SOURCE_TICKETS, SOURCE_LOGS, SOURCE_BRIDGE},
        LOGS_ENRICHED: {SOURCE_LOGS},
        ALERTS: {SOURCE_LOGS},
        LOG_TEMPLATES: {SOURCE_LOGS},
        LLM_RESPONSES: {SOURCE_BRIDGE},
    }
    log_schema = CATALOG[LOGS_ENRICHED].schema
    log_teams = {t for t, spec in CATALOG.topics.items() if t.startswith("team.") and spec.schema == log_schema}
    sources.update({topic: {SOURCE_LOGS} for topic in log_teams})
    seen: dict[str, set[str]] = {}
    for record in flow.records:
        event = from_binary_event(KafkaMessage(headers=dict(record.raw_headers), key=record.key, value=record.value))
        schema = CATALOG[record.topic].schema
        assert schema is not None
        assert event.get_type() == event_type(schema), record.topic
        assert event.get_specversion() == "1.0" and event.get_datacontenttype() == "application/json"
        assert event.get_source() in sources.get(record.topic, {SOURCE_TICKETS})
        assert event.get_data() == record.doc  # the value is the event's data, decoded as JSON
        assert event.get_time() is not None and event.get_time().tzinfo is not None
        assert event.get_extension("partitionkey") == (record.key.decode() if record.key else None)
        if record.topic not in (DEADLETTER, LLM_RESPONSES):
            assert event.get_extension("modelname") and event.get_extension("modelversion")
            assert event.get_subject()
        if record.topic in (TICKETS_ENRICHED, ESCALATIONS, LOGS_ENRICHED, *log_teams):
            assert 0.0 <= float(event.get_extension("confidence")) <= 1.0
        if record.topic == LLM_RESPONSES:
            assert event.get_extension("modelname") == record.doc["model"] == "big-model"
        seen.setdefault(record.topic, set()).add(event.get_id())
    for topic, ids in seen.items():  # ids are unique per topic
        assert len(ids) == len(flow.of(topic)), topic
    queues = {t for t in seen if t.startswith("support.queue.")}
    assert len(queues) >= 2, queues
    assert log_teams & set(seen), "some log lines should be routed to team topics"
    assert set(sources) - log_teams <= set(seen), set(sources) - log_teams - set(seen)
