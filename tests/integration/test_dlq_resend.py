"""``streamer dlq resend`` on the real broker: chosen dead letters go back as the input records they were."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from harness.fixtures import TopicFactory
from harness.kafka import Topics

from streamer.cli import main
from streamer.deadletters import RESENT_HEADER
from streamer.events import DecodeFailure, RawEvent, Source, dead_letter
from streamer.topics import DEADLETTER, ESCALATIONS, TICKETS, TICKETS_ENRICHED

pytestmark = pytest.mark.kafka

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def send(topics: Topics, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Source:
    [(partition, offset)] = topics.produce(topic, [(key, value, headers)])
    return Source(topics.topic(topic), partition, offset)


def read(topics: Topics, topic: str) -> list[Record]:
    return [(m.key, m.value, list(m.headers)) for m in topics.read(topic, timeout=60)]


def failure(source: Source, value: bytes, key: bytes | None, code: str) -> dict[str, Any]:
    return dead_letter(DecodeFailure(RawEvent(value, source, key), code, f"{code} here"), "2026-12-01T00:00:00Z")


def test_resend_chosen_dead_letters_from_their_source_or_their_raw_copy(
    topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    topics = topic_factory([TICKETS, TICKETS_ENRICHED, ESCALATIONS, DEADLETTER], partitions=2)
    settings = topics.settings
    tickets = settings.topic(TICKETS)
    trace = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]

    # inputs that failed once, as the worker and the bridge read them
    a = send(topics, TICKETS, b'{"id": "A", "body": "timed out"}', b"cust-1", trace)
    b = send(topics, TICKETS, b'{"id": "B"}', b"cust-2", [])
    e = send(topics, ESCALATIONS, b'{"id": "E", "kind": "ticket"}', b"cust-3", [])
    gone = Source(tickets, 0, 10_000)  # an offset retention has removed
    letters = [
        failure(a, b"(the copy the dead letter kept)", b"cust-1", "processing_failed"),  # resent from source
        failure(b, b'{"id": "B"}', b"cust-2", "schema"),  # another code
        failure(gone, b'{"id": "X", "body": "raw copy"}', b"cust-4", "processing_failed"),  # resent from raw
        failure(gone, b"x" * 70_000, b"cust-5", "processing_failed"),  # raw cut at 64 KiB: skipped
        failure(e, b"Sure! It is a refund.", b"cust-3", "invalid_answer"),  # raw is the answer: from source
        failure(gone, b"I think refund", b"cust-6", "invalid_answer"),  # ... and nothing to resend
    ]
    for letter in letters:
        send(topics, DEADLETTER, orjson.dumps(letter), b"dl", [])

    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", topics.bootstrap)
    monkeypatch.setenv("STREAMER_TOPIC_PREFIX", topics.prefix)
    before = read(topics, TICKETS)
    assert main(["dlq", "resend", "--code", "processing_failed", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "6 dead letters read, 3 chosen; would resend 2 (1 read again" in dry
    assert "skipped 1: source offset gone and the raw value was cut at 64 KiB" in dry
    assert len(read(topics, TICKETS)) == len(before)

    assert main(["dlq", "resend", "--code", "processing_failed", "--code", "invalid_answer"]) == 0
    out = capsys.readouterr().out
    assert "6 dead letters read, 5 chosen; resent 3 (2 read again from their source offset, 1 from" in out
    assert "skipped 1: source offset gone and the dead letter of invalid_answer does not keep the input" in out
    after = read(topics, TICKETS)
    again = [r for r in after if RESENT_HEADER in dict(r[2])]
    assert len(after) == len(before) + 2
    dead_topic = settings.topic(DEADLETTER)
    assert sorted((k, v) for k, v, _ in again) == [
        (b"cust-1", b'{"id": "A", "body": "timed out"}'),
        (b"cust-4", b'{"id": "X", "body": "raw copy"}'),
    ]
    headers = {k: dict(h) for k, _, h in again}
    assert headers[b"cust-1"]["traceparent"] == trace[0][1]  # the original's headers travel with it
    assert headers[b"cust-1"][RESENT_HEADER].decode().startswith(f"{dead_topic}/")
    [(key, value, _), (key2, value2, _)] = read(topics, ESCALATIONS)
    assert (key2, value2) == (key, value) == (b"cust-3", b'{"id": "E", "kind": "ticket"}')

    assert main(["dlq", "resend", "--code", "schema", "--to", TICKETS_ENRICHED]) == 0
    assert "resent 1" in capsys.readouterr().out
    [(key, value, _)] = read(topics, TICKETS_ENRICHED)
    assert (key, value) == (b"cust-2", b'{"id": "B"}')


def test_resend_needs_a_code_and_an_existing_target(
    topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    topics = topic_factory([DEADLETTER])
    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", topics.bootstrap)
    monkeypatch.setenv("STREAMER_TOPIC_PREFIX", topics.prefix)
    with pytest.raises(SystemExit):
        main(["dlq", "resend"])
    capsys.readouterr()
    assert main(["dlq", "resend", "--code", "schema", "--to", "no.such.topic"]) == 2
    assert capsys.readouterr().err.startswith("streamer: error: topic ")
