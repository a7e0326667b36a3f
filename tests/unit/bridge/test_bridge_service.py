"""The bridge's per-record logic against a fake endpoint (no broker): what each escalation becomes, and the
offset bookkeeping that decides what may be committed."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from fakes.openai_server import FakeOpenAI

from streamer.bridge.llm import ClientOptions, LLMClient
from streamer.bridge.prompt import LabelSet
from streamer.bridge.service import Bridge, OffsetTracker
from streamer.events import RawEvent, Source
from streamer.settings import Settings
from streamer.topics import DEADLETTER, LLM_RESPONSES, SchemaRegistry

REPO = Path(__file__).resolve().parents[3]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
LABELS = LabelSet(heads={"intent": ("refund_request", "card_arrival", "order_status")})


def test_offset_tracker_commits_only_below_the_lowest_open_offset() -> None:
    tracker = OffsetTracker()
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    for offset in (10, 11, 12):
        tracker.add(a, offset)
    tracker.add(b, 5)
    assert tracker.committable() == {a: 10, b: 5}
    tracker.finish(a, 11)
    tracker.finish(a, 12)
    assert tracker.committable()[a] == 10  # 10 is still open: nothing past it may be committed
    tracker.finish(a, 10)
    tracker.finish(b, 5)
    assert tracker.committable() == {a: 13, b: 6}
    assert len(tracker) == 0
    tracker.add(a, 13)
    assert len(tracker) == 1 and tracker.open_in(a) == 1
    tracker.forget([a])
    assert tracker.committable() == {b: 6}


def escalation(record_id: str, text: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": record_id,
        "kind": "ticket",
        "source": {"topic": "support.tickets.v1", "partition": 0, "offset": 7, "timestamp_ms": None},
        "reasons": [{"code": "low_confidence", "detail": "intent refund_request confidence 0.41 < 0.55"}],
        "redacted_text": text,
        "candidates": [{"label": "refund_request", "confidence": 0.41}, {"label": "card_arrival", "confidence": 0.3}],
        "labels": {"intent": "refund_request"},
        "model": {"name": "default", "version": "abc"},
        "escalated_at": "2026-11-28T09:00:00.000Z",
    }
    doc.update(fields)
    assert REGISTRY.errors("escalation.v1.json", doc) == []
    return doc


def raw(doc: dict[str, Any] | bytes, offset: int = 3, key: bytes | None = b"k") -> RawEvent:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return RawEvent(value=value, source=Source("llm.escalations.v1", 2, offset, 1_700_000_000_000), key=key)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().up()
    yield server
    server.close()


def make_bridge(fake: FakeOpenAI, **overrides: Any) -> Bridge:
    values: dict[str, Any] = {
        "llm_base_url": fake.base_url,
        "llm_model": "big-model",
        "llm_rate_per_s": 0,
        "llm_backoff_initial_s": 0.01,
        "llm_backoff_max_s": 0.05,
        "llm_max_retries": 2,
        "llm_circuit_failures": 3,
        "llm_circuit_reset_s": 0.2,
    }
    settings = Settings(**{**values, **overrides})
    return Bridge(settings, client=LLMClient(ClientOptions.from_settings(settings)), labels=LABELS)


async def test_answer_record(fake: FakeOpenAI) -> None:
    bridge = make_bridge(fake)
    outputs, outcome = await bridge.process(raw(escalation("TCK-1", "Where is my order? want: order_status")))
    await bridge.client.close()
    assert outcome == "answered"
    [out] = outputs
    assert out.topic == LLM_RESPONSES and out.key == b"k"  # the escalation's key, as the worker's outputs
    record = dict(out.value)
    assert REGISTRY.errors("llm_response.v1.json", record) == []
    assert record["id"] == "TCK-1" and record["intent"] == "order_status" and record["priority"] == "normal"
    assert record["source"] == {
        "topic": "llm.escalations.v1",
        "partition": 2,
        "offset": 3,
        "timestamp_ms": 1_700_000_000_000,
    }
    assert record["small_model"] == {"name": "default", "version": "abc", "intent": "refund_request"}
    assert record["model"] == "big-model" and record["prompt_version"] == "escalation-v1"
    usage = record["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert record["attempts"] == 1 and record["latency_ms"] >= 0
    sample = bridge.metrics.registry.get_sample_value
    assert sample("streamer_llm_tokens_total", {"kind": "prompt"}) == usage["prompt_tokens"]
    assert sample("streamer_llm_tokens_total", {"kind": "completion"}) == usage["completion_tokens"]
    assert sample("streamer_llm_request_seconds_count") == 1
    assert sample("streamer_llm_requests_total", {"outcome": "ok"}) == 1
    assert b"streamer_llm_circuit_state 0.0" in bridge.metrics.exposition()


async def test_outputs_keep_the_escalations_key_and_fall_back_to_the_id(fake: FakeOpenAI) -> None:
    """One rule for every output of the project: the input record's key; its id when it has none."""
    bridge = make_bridge(fake)
    [keyed], _ = await bridge.process(raw(escalation("TCK-10", "want: order_status"), key=b"customer-77"))
    [unkeyed], _ = await bridge.process(raw(escalation("TCK-11", "want: order_status"), key=None))
    [refused], _ = await bridge.process(raw(escalation("TCK-12", "mail jane.doe@example.org"), key=b"customer-78"))
    await bridge.client.close()
    assert (keyed.topic, keyed.key) == (LLM_RESPONSES, b"customer-77")
    assert (unkeyed.topic, unkeyed.key) == (LLM_RESPONSES, b"TCK-11")
    assert (refused.topic, refused.key) == (DEADLETTER, b"customer-78")


async def test_invalid_answers_are_dead_letters_with_the_raw_answer(fake: FakeOpenAI) -> None:
    bridge = make_bridge(fake)
    prose, _ = await bridge.process(raw(escalation("TCK-2", "MALFORMED please")))
    unknown, outcome = await bridge.process(raw(escalation("TCK-3", "want: teleportation")))
    await bridge.client.close()
    assert outcome == "invalid_answer"
    for out, record_id in ((prose[0], "TCK-2"), (unknown[0], "TCK-3")):
        assert out.topic == DEADLETTER and out.key == b"k"
        record = dict(out.value)
        assert REGISTRY.errors("deadletter.v1.json", record) == []
        assert record["error"]["code"] == "invalid_answer" and record["id"] == record_id
        assert record["source"]["topic"] == "llm.escalations.v1"
    assert prose[0].value["raw"]["value"] == "Sure! This looks like refund_request to me."
    assert '"intent":"teleportation"' in unknown[0].value["raw"]["value"]
    assert unknown[0].value["error"]["field"] == "intent"


async def test_pii_is_refused_without_a_call_and_not_kept(fake: FakeOpenAI) -> None:
    bridge = make_bridge(fake)
    email, card = "jane.doe@example.org", "4111 1111 1111 1111"
    doc = escalation("TCK-4", f"Refund to {card}, mail me at {email}", redacted_subject=f"from {email}")
    [out], outcome = await bridge.process(raw(doc))
    await bridge.client.close()
    assert outcome == "unredacted_pii"
    assert fake.count() == 0
    record = dict(out.value)
    assert REGISTRY.errors("deadletter.v1.json", record) == []
    assert record["error"]["code"] == "unredacted_pii" and record["error"]["field"] == "redacted_subject"
    assert "EMAIL" in record["error"]["message"] and "CARD" in record["error"]["message"]
    blob = orjson.dumps(record).decode()
    assert email not in blob and card not in blob
    kept = orjson.loads(record["raw"]["value"])
    assert kept["id"] == "TCK-4" and "[EMAIL_1]" in kept["redacted_text"] and "[CARD_1]" in kept["redacted_text"]


async def test_undecodable_escalations(fake: FakeOpenAI) -> None:
    bridge = make_bridge(fake)
    [bad_json], outcome = await bridge.process(raw(b"{nope"))
    [bad_schema], _ = await bridge.process(raw(orjson.dumps({"id": "TCK-5", "kind": "ticket"})))
    [bad_utf8], _ = await bridge.process(raw(b'{"id": "\xff"}'))
    await bridge.client.close()
    assert outcome == "undecodable"
    assert bad_json.value["error"]["code"] == "invalid_json"
    assert bad_schema.value["error"]["code"] == "schema" and bad_schema.value["id"] == "TCK-5"
    assert bad_utf8.value["raw"]["encoding"] == "base64"
    assert base64.b64decode(bad_utf8.value["raw"]["value"]) == b'{"id": "\xff"}'
    assert fake.count() == 0


async def test_rejected_request_is_a_dead_letter(fake: FakeOpenAI) -> None:
    fake.fail_next(400)
    bridge = make_bridge(fake)
    [out], outcome = await bridge.process(raw(escalation("TCK-6", "hello")))
    await bridge.client.close()
    assert outcome == "processing_failed"
    assert "HTTP 400" in out.value["error"]["message"]


async def test_an_endpoint_without_structured_output_is_asked_again_without_it(fake: FakeOpenAI) -> None:
    fake.refuse_schema = 500  # llama-cpp-python's answer
    bridge = make_bridge(fake)
    [out], outcome = await bridge.process(raw(escalation("TCK-7", "Where is it? want: order_status")))
    [again], _ = await bridge.process(raw(escalation("TCK-8", "want: card_arrival")))
    await bridge.client.close()
    assert (outcome, out.value["intent"], again.value["intent"]) == ("answered", "order_status", "card_arrival")
    assert out.value["attempts"] == 2  # the refused request counts
    formats = [r.body["response_format"]["type"] for r in fake.requests]
    assert formats == ["json_schema", "json_object", "json_object"]  # the refusal is remembered
    schema = fake.requests[0].body["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]["intent"]["enum"]) >= {"order_status", "other"}


async def test_escalations_refused_together_step_down_one_level(fake: FakeOpenAI) -> None:
    fake.refuse_schema = 500
    bridge = make_bridge(fake, llm_max_concurrency=4)
    results = await asyncio.gather(
        *(bridge.process(raw(escalation(f"TCK-{i}", "want: order_status"), offset=i)) for i in range(4))
    )
    await bridge.client.close()
    assert [outcome for _, outcome in results] == ["answered"] * 4
    assert bridge.client.structured == "json_object"  # not "none": four refusals of one level are one step
    assert [r.body["response_format"]["type"] for r in fake.requests].count("json_object") == 4


async def test_outage_is_waited_out(fake: FakeOpenAI) -> None:
    fake.down()
    bridge = make_bridge(fake)
    task = asyncio.create_task(bridge.process(raw(escalation("TCK-7", "want: card_arrival"))))
    await asyncio.sleep(1.0)
    assert not task.done()
    assert bridge.client.breaker.state.value in ("open", "half_open")
    sample = bridge.metrics.registry.get_sample_value
    assert sample("streamer_llm_circuit_state") in (1.0, 2.0)
    assert (sample("streamer_llm_requests_total", {"outcome": "connection"}) or 0) >= 3
    fake.up()
    outputs, outcome = await asyncio.wait_for(task, 10)
    await bridge.client.close()
    assert outcome == "answered" and outputs[0].value["intent"] == "card_arrival"
    assert sample("streamer_llm_circuit_state") == 0.0


async def test_a_record_failing_while_others_succeed_is_dead_lettered(fake: FakeOpenAI) -> None:
    original = fake._handle

    async def poison(request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        if b"POISON" in body:
            return web.json_response({"error": "boom"}, status=500)
        return await original(request)

    fake._handle = poison  # type: ignore[method-assign]
    fake.down()
    fake.up()
    bridge = make_bridge(fake, llm_circuit_failures=1000)
    task = asyncio.create_task(bridge.process(raw(escalation("TCK-8", "POISON"))))
    answered = 0
    while not task.done():
        _, outcome = await bridge.process(raw(escalation(f"ok-{answered}", "fine")))
        answered += outcome == "answered"
    [out], outcome = task.result()
    await bridge.client.close()
    assert outcome == "processing_failed" and answered > 0
    assert "3 rounds" in out.value["error"]["message"]


async def test_stopping_abandons_waiting_records(fake: FakeOpenAI) -> None:
    fake.down()
    bridge = make_bridge(fake)
    task = asyncio.create_task(bridge.process(raw(escalation("TCK-9", "hello"))))
    await asyncio.sleep(0.5)
    bridge.stop()
    with pytest.raises(Exception, match="stopping"):
        await asyncio.wait_for(task, 5)
    await bridge.client.close()
