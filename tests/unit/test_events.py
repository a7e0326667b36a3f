"""Decoding raw bytes into tickets or dead letters; every failure names its cause and keeps the bytes."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from streamer.events import DecodeFailure, DecodeLimits, RawEvent, Source, Ticket, dead_letter, decode_ticket
from streamer.topics import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
VALIDATOR = REGISTRY.validator("ticket.v1.json")
LIMITS = DecodeLimits(max_event_bytes=2000, max_text_chars=100)
SOURCE = Source("support.tickets.v1", 2, 41, 1_700_000_000_000)

GOOD = {
    "id": "TCK-1",
    "created_at": "2026-11-27T10:00:00Z",
    "channel": "email",
    "subject": "Refund",
    "body": "Please refund order ORD-1.",
    "customer": {"id": "C-1", "tier": "VIP"},
    "language": "en-GB",
    "metadata": {"source": "zendesk"},
}


def decode(value: bytes | None) -> Ticket | DecodeFailure:
    return decode_ticket(RawEvent(value, SOURCE, b"k"), VALIDATOR, LIMITS)


def test_good_ticket() -> None:
    t = decode(orjson.dumps(GOOD))
    assert isinstance(t, Ticket)
    assert t.id == "TCK-1"
    assert t.text == "Refund\nPlease refund order ORD-1."
    assert t.customer_tier == "vip"
    assert t.declared_language == "en"
    assert not t.truncated


def test_long_text_is_cut_for_the_model_and_flagged_but_kept() -> None:
    body = "word " * 100
    t = decode(orjson.dumps({**GOOD, "body": body}))
    assert isinstance(t, Ticket)
    assert t.truncated and len(t.text) == LIMITS.max_text_chars
    assert t.body == body


@pytest.mark.parametrize(
    ("value", "code", "field", "message"),
    [
        (b'{"id": "x", "body": ', "invalid_json", None, "not valid JSON"),
        (b"\xff\xfe{}", "invalid_utf8", None, "not UTF-8 at byte 0"),
        (b"[1, 2]", "not_an_object", None, "expected a JSON object, got list"),
        (None, "not_an_object", None, "tombstone"),
        (orjson.dumps({**GOOD, "body": 42}), "schema", "body", "42 is not of type 'string'"),
        (
            orjson.dumps({k: v for k, v in GOOD.items() if k != "created_at"}),
            "schema",
            "created_at",
            "created_at: is required and missing",
        ),
        (
            orjson.dumps({**GOOD, "customer": {"tier": "vip"}}),
            "schema",
            "customer.id",
            "customer.id: is required and missing",
        ),
        (orjson.dumps({**GOOD, "created_at": "2026-11-27"}), "schema", "created_at", "a date without a time"),
        (orjson.dumps({**GOOD, "created_at": "2026-11-27T10:00:00"}), "schema", "created_at", "no time zone"),
        (orjson.dumps({**GOOD, "customer": {"id": "C", "tier": 5}}), "schema", "customer.tier", "not of type"),
        (orjson.dumps({**GOOD, "created_at": "yesterday"}), "schema", "created_at", "ISO-8601"),
        (orjson.dumps({**GOOD, "created_at": "2026-12-31T23:59:61Z"}), "schema", "created_at", "ISO-8601"),
        (orjson.dumps({**GOOD, "body": "   "}), "schema", "body", "blank"),
        (orjson.dumps({**GOOD, "channel": "pigeon"}), "schema", "channel", "is not one of"),
        (orjson.dumps({**GOOD, "body": "x" * 3000}), "oversize", None, "more than the limit of 2000"),
    ],
)
def test_failures_name_the_problem(value: bytes | None, code: str, field: str | None, message: str) -> None:
    failure = decode(value)
    assert isinstance(failure, DecodeFailure)
    assert failure.code == code
    assert failure.field == field
    assert message in failure.message


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-27T10:00:00Z",
        "2026-11-27T10:00:00.123+02:00",
        "2026-11-27T10:00z",
        "2016-12-31T23:59:60Z",  # a leap second, as RFC 3339 writes it
        "2017-01-01T00:59:60.5+01:00",
    ],
)
def test_created_at_with_a_time_and_a_zone_is_accepted(stamp: str) -> None:
    assert isinstance(decode(orjson.dumps({**GOOD, "created_at": stamp})), Ticket)


def test_a_byte_order_mark_before_a_ticket_is_ignored() -> None:
    decoded = decode(b"\xef\xbb\xbf" + orjson.dumps(GOOD))
    assert isinstance(decoded, Ticket) and decoded.id == GOOD["id"]


def test_dead_letter_keeps_raw_bytes_base64_when_not_utf8_and_validates() -> None:
    raw = b"\xff\x00binary"
    failure = decode(raw)
    assert isinstance(failure, DecodeFailure)
    record = dead_letter(failure, "2026-11-28T00:00:00Z")
    assert record["raw"]["encoding"] == "base64"
    assert base64.b64decode(record["raw"]["value"]) == raw
    assert record["source"] == {
        "topic": "support.tickets.v1",
        "partition": 2,
        "offset": 41,
        "timestamp_ms": 1_700_000_000_000,
    }
    assert record["raw"]["key"] == "k"
    assert REGISTRY.errors("deadletter.v1.json", record) == []


def test_dead_letter_of_schema_error_keeps_the_id_and_text() -> None:
    failure = decode(orjson.dumps({**GOOD, "body": 42}))
    assert isinstance(failure, DecodeFailure)
    record = dead_letter(failure, "2026-11-28T00:00:00Z")
    assert record["id"] == "TCK-1"
    assert record["raw"]["encoding"] == "utf-8"
    assert orjson.loads(record["raw"]["value"])["body"] == 42
    assert REGISTRY.errors("deadletter.v1.json", record) == []


def test_huge_raw_values_are_cut_in_the_dead_letter() -> None:
    huge = b"x" * 200_000
    failure = DecodeFailure(RawEvent(huge, SOURCE), "oversize", "too big")
    record = dead_letter(failure, "2026-11-28T00:00:00Z")
    assert record["raw"]["cut"] is True
    assert record["raw"]["size"] == 200_000
    assert len(record["raw"]["value"]) == 64 * 1024


def test_a_megabyte_id_is_clipped_in_the_dead_letter_so_the_brokers_accept_it() -> None:
    huge = "i" * 900_000
    value = orjson.dumps({**GOOD, "id": huge})
    failure = decode_ticket(RawEvent(value, SOURCE, b"k"), VALIDATOR, DecodeLimits(max_event_bytes=1_000_000))
    assert isinstance(failure, DecodeFailure) and failure.code == "schema" and failure.field == "id"
    assert failure.id is not None and len(failure.id) == 200 and failure.id.endswith("…[900000 chars]")
    assert len(failure.message) <= 1000  # the schema error quotes the id: clipped too
    record = dead_letter(failure, "2026-12-04T00:00:00.000Z")
    assert REGISTRY.errors("deadletter.v1.json", record) == []
    assert record["raw"]["size"] == len(value)  # the raw section still says what came in
    assert len(orjson.dumps(record)) < 1_500_000  # under the producer's 2,000,000-byte request limit


def test_short_ids_and_messages_are_kept_as_they_are() -> None:
    failure = DecodeFailure(RawEvent(b"x", SOURCE), "schema", "m" * 1000, field="f", id="a" * 200)
    assert failure.id == "a" * 200 and failure.message == "m" * 1000 and failure.field == "f"


def test_a_huge_key_is_cut_in_the_dead_letter_which_the_kafka_key_keeps_whole() -> None:
    """A dead letter that copied a 700 kB key beside the record's own Kafka key would pass the producer's
    request limit and stall the path on one record: the copy keeps the first 4 KiB and says so."""
    from streamer.deadletters import record_from_raw

    key = b"K" * 700_000
    failure = decode_ticket(RawEvent(b"{not json", SOURCE, key), VALIDATOR, DecodeLimits(max_event_bytes=1_000_000))
    assert isinstance(failure, DecodeFailure) and failure.code == "invalid_json"
    for record in (dead_letter(failure, "2026-12-05T00:00:00Z"), dead_letter(failure, "x", digest_only=True)):
        assert record["raw"]["key"] == "K" * 4096 and record["raw"]["key_cut"] is True
        assert len(orjson.dumps(record)) < 8_000
    record = dead_letter(failure, "2026-12-05T00:00:00Z")
    assert REGISTRY.errors("deadletter.v1.json", record) == []
    assert record_from_raw(record) == "source offset gone and the raw key was cut at 4 KiB"
    short = dead_letter(decode(b"{not json"), "2026-12-05T00:00:00Z")
    assert "key_cut" not in short["raw"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"encoding": "base64", "value": "AAECAw=="}, b"\x00\x01\x02\x03"),
        ({"encoding": "base64", "value": "not base64!"}, "not valid base64 or UTF-8"),
        ({"encoding": "utf-8", "value": "half a surrogate \ud800"}, "not valid base64 or UTF-8"),
        ({"encoding": "utf-8", "value": "{}"}, b"{}"),
    ],
)
def test_a_dead_letters_raw_copy_that_cannot_be_read_is_skipped_with_the_reason(
    raw: dict[str, str], expected: bytes | str
) -> None:
    from streamer.deadletters import Record, record_from_raw

    doc = {"error": {"code": "invalid_json"}, "raw": {**raw, "size": 4, "cut": False, "key": "k"}}
    found = record_from_raw(doc)
    if isinstance(expected, bytes):
        assert found == Record(value=expected, key=b"k")
    else:
        assert isinstance(found, str) and expected in found


def test_key_and_value_together_are_held_to_the_size_limit() -> None:
    """Every output keeps the input's key beside a value about the input's size."""
    value = orjson.dumps({**GOOD, "body": "b" * 500_000})
    limits = DecodeLimits(max_event_bytes=1_000_000)
    assert isinstance(decode_ticket(RawEvent(value, SOURCE, b"k" * 400_000), VALIDATOR, limits), Ticket)
    failure = decode_ticket(RawEvent(value, SOURCE, b"k" * 600_000), VALIDATOR, limits)
    assert isinstance(failure, DecodeFailure) and failure.code == "oversize"
    assert (
        failure.message
        == f"key and value are {600_000 + len(value)} bytes (key 600000), more than the limit of 1000000"
    )
    from streamer.logs.decode import decode_log

    line = b"2026-12-05 08:00:00 ERROR payment failed " + b"x" * 500_000
    logged = decode_log(RawEvent(line, SOURCE, b"s" * 600_000), limits)
    assert isinstance(logged, DecodeFailure) and logged.code == "oversize"
    assert (
        logged.message == f"key and value are {600_000 + len(line)} bytes (key 600000), more than the limit of 1000000"
    )
