"""Output headers and trace context without a broker: CloudEvents attributes a CloudEvents reader accepts,
``traceparent`` continued or started, and the spans of one ticket batch when tracing is on."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_decode_properties import PROCESSOR

from streamer.events import RawEvent, Source, encode
from streamer.headers import (
    SOURCE_TICKETS,
    Contracts,
    TopicContract,
    TraceParent,
    event_id,
    event_type,
    header_map,
    incoming_trace,
    subject_of,
)
from streamer.pipeline.tickets import TicketProcessor
from streamer.topics import DEADLETTER, ESCALATIONS, TICKETS_ENRICHED, load_catalog, load_contracts
from streamer.tracing import Tracing, configure_tracing, tracing_configured

REPO = Path(__file__).resolve().parents[2]
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def ticket(i: int, body: str = "Where is my refund? I was charged twice.") -> bytes:
    return orjson.dumps({"id": f"T-{i}", "created_at": "2026-11-28T10:00:00Z", "body": body})


def raw(i: int, headers: tuple[tuple[str, bytes], ...] = ()) -> RawEvent:
    value = ticket(i)
    return RawEvent(value, Source("support.tickets.v1", 2, 100 + i, 1_764_320_000_000), f"T-{i}".encode(), headers)


def test_traceparent_parsing_follows_the_w3c_rules() -> None:
    parsed = TraceParent.parse(PARENT)
    assert parsed == TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01")
    assert parsed.header() == PARENT and parsed.sampled
    for bad in (
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        PARENT + "-extra",  # version 00 has exactly four fields
    ):
        assert TraceParent.parse(bad) is None, bad
    # a later version may add fields: the first four are read
    assert TraceParent.parse("cc" + PARENT[2:] + "-what-the-future-holds") is not None
    state = incoming_trace([("TraceParent", PARENT.encode()), ("tracestate", b"vendor=1")])
    assert state is not None and state.tracestate == "vendor=1"
    fresh = {TraceParent.new().trace_id for _ in range(50)}
    assert len(fresh) == 50 and not TraceParent.new().sampled


def test_headers_read_back_with_the_cloudevents_sdk() -> None:
    contracts = load_contracts(REPO / "topics", SOURCE_TICKETS, ("support", "3"))
    record = {"id": "T-9", "source": {"topic": "support.tickets.v1", "partition": 1, "offset": 42}}
    headers = contracts.headers(
        TICKETS_ENRICHED,
        event_id=event_id(TICKETS_ENRICHED, record["source"]),  # type: ignore[arg-type]
        time="2026-11-28T10:00:01.250Z",
        trace=TraceParent.parse(PARENT),  # type: ignore[arg-type]
        subject="T-9",
        confidence=0.87654,
    )
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    event = from_binary_event(KafkaMessage(headers=dict(headers), key=b"T-9", value=encode(record)))
    assert event.get_type() == "dev.streamer.enriched_ticket.v1"
    assert event.get_source() == "/streamer/tickets" and event.get_specversion() == "1.0"
    assert event.get_id() == "support.tickets.v1-1-42:support.tickets.enriched.v1"
    assert event.get_subject() == "T-9"
    assert event.get_dataschema() == "https://streamer.dev/schemas/enriched_ticket.v1.json"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time().isoformat() == "2026-11-28T10:00:01.250000+00:00"
    assert event.get_extension("modelname") == "support" and event.get_extension("modelversion") == "3"
    assert event.get_extension("confidence") == "0.8765"
    assert event.get_data() == record
    assert header_map(headers)["traceparent"] == PARENT


def test_every_declared_topic_has_a_type_versioned_like_its_schema() -> None:
    catalog = load_catalog(REPO / "topics" / "topics.yaml")
    contracts = load_contracts(REPO / "topics", SOURCE_TICKETS)
    for spec in catalog.topics.values():
        assert spec.schema is not None
        assert contracts.contracts[spec.name].type == event_type(spec.schema)
        assert contracts.contracts[spec.name].type.endswith(".v1")
    # a topic nobody declared still gets typed headers rather than a KeyError mid-batch
    other = Contracts({"a": TopicContract("a", "dev.streamer.a.v1", None)}, SOURCE_TICKETS)
    trace = TraceParent.new()
    assert header_map(other.headers("b", event_id="x", time="t", trace=trace))["ce_type"] == "dev.streamer.b"


def test_subjects_and_ids() -> None:
    assert subject_of({"id": "T-1", "kind": "ticket"}) == "T-1"
    assert subject_of({"id": "ops.logs.v1:0:5", "template_id": "tpl-9"}) == "tpl-9"
    assert subject_of({"id": "x", "kind": "log", "labels": {"template_id": "tpl-3"}}) == "tpl-3"
    first, second = event_id("ops.alerts.v1", None, "burst:a"), event_id("ops.alerts.v1", None, "burst:a")
    assert first != second and first.startswith("burst:a:ops.alerts.v1:")


def test_ticket_outputs_continue_the_input_trace_or_start_one() -> None:
    result = PROCESSOR([raw(1, (("traceparent", PARENT.encode()),)), raw(2), raw(3, (("traceparent", b"junk"),))])
    by_ticket: dict[str, list[dict[str, str]]] = {}
    for out in result.outputs:
        by_ticket.setdefault(out.value["id"], []).append(header_map(out.headers))
    assert set(by_ticket) == {"T-1", "T-2", "T-3"}
    assert all(h["traceparent"] == PARENT for h in by_ticket["T-1"])
    for tid in ("T-2", "T-3"):  # no (valid) context: a new trace per ticket, the same on all its outputs
        traces = {TraceParent.parse(h["traceparent"]).trace_id for h in by_ticket[tid]}  # type: ignore[union-attr]
        assert len(traces) == 1 and traces != {PARENT.split("-")[1]}
    assert by_ticket["T-2"][0]["traceparent"] != by_ticket["T-3"][0]["traceparent"]
    for out in result.outputs:
        h = header_map(out.headers)
        assert h["ce_subject"] == out.value["id"] and h["ce_source"] == "/streamer/tickets"
        assert h["ce_time"] == out.value["processed_at" if out.topic != ESCALATIONS else "escalated_at"]
        assert h["ce_modelname"] == "hash" and h["ce_modelversion"] == "1"
        decided = out.value["candidates"][0] if out.topic == ESCALATIONS else out.value["triage"]["intent"]
        assert float(h["ce_confidence"]) == pytest.approx(decided["confidence"], abs=1e-4)
        src = out.value["source"]
        assert h["ce_id"] == f"support.tickets.v1-{src['partition']}-{src['offset']}:{out.topic}"
    assert not result.spans  # tracing off: no span was made


def test_dead_letters_carry_headers_too() -> None:
    bad = RawEvent(b"{not json", Source("support.tickets.v1", 0, 7), b"k", (("traceparent", PARENT.encode()),))
    [out] = PROCESSOR([bad]).outputs
    h = header_map(out.headers)
    assert out.topic == DEADLETTER and h["ce_type"] == "dev.streamer.deadletter.v1"
    assert h["traceparent"] == PARENT and "ce_confidence" not in h and "ce_subject" not in h


def test_spans_of_a_batch_form_the_expected_tree() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = TicketProcessor(
        model=PROCESSOR.model,
        model_info=PROCESSOR.model_info,
        router=PROCESSOR.router,
        policy=PROCESSOR.policy,
        validator=PROCESSOR.validator,
        limits=PROCESSOR.limits,
        contracts=PROCESSOR.contracts,
        clock=PROCESSOR.clock,
        tracing=Tracing(provider, consumer_group="g"),
    )
    result = processor([raw(1, (("traceparent", PARENT.encode()),)), raw(2)])
    processor.tracing.end(result.spans)
    spans = exporter.get_finished_spans()
    receive = [s for s in spans if s.name == "receive support.tickets.v1"]
    [batch] = [s for s in spans if s.name == "triage batch"]
    [model] = [s for s in spans if s.name == "model"]
    sends = [s for s in spans if s.name.startswith("send ")]
    assert len(receive) == 2 and len(sends) == len(result.outputs)
    traced = next(s for s in receive if s.attributes["messaging.kafka.message.key"] == "T-1")  # type: ignore[index]
    assert f"{traced.context.trace_id:032x}" == PARENT.split("-")[1]
    assert traced.parent is not None and f"{traced.parent.span_id:016x}" == PARENT.split("-")[2]
    assert traced.kind is SpanKind.CONSUMER and traced.attributes["messaging.consumer.group.name"] == "g"  # type: ignore[index]
    assert traced.attributes["messaging.kafka.offset"] == 101  # type: ignore[index]
    assert batch.parent is None and {link.context.span_id for link in batch.links} == {
        s.context.span_id for s in receive
    }
    assert model.parent is not None and model.parent.span_id == batch.context.span_id
    receive_ids = {s.context.span_id for s in receive}
    for send in sends:
        assert send.kind is SpanKind.PRODUCER and send.parent is not None and send.parent.span_id in receive_ids
    # each output's traceparent names its own send span
    send_ids = {f"{s.context.span_id:016x}" for s in sends}
    assert {header_map(o.headers)["traceparent"].split("-")[2] for o in result.outputs} == send_ids


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    assert not tracing_configured({})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    off = configure_tracing("streamer-worker", {})
    assert not off.enabled and off.provider is None
    on = configure_tracing("streamer-worker", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        assert on.enabled
    finally:
        on.shutdown()
