"""Wire types and codecs: raw Kafka bytes in, typed events or dead letters out; output records out.

Decoding never raises on bad input: every failure becomes a ``DecodeFailure`` that names the field, and
the adapter turns it into a dead-letter record. Every output record carries the input id (the
idempotency key) and where the input came from, so consumers can drop duplicates of at-least-once
delivery and anyone can trace a decision back to its offset.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from streamer.topics import error_path

#: Dead letters keep at most this much of a raw value: enough to debug, bounded for hostile input.
DEADLETTER_RAW_LIMIT = 64 * 1024
#: ... and of its key, which the dead letter's own Kafka key already carries whole: a second copy of a key
#: near the size limit would make the dead letter too large for the producer's request limit.
DEADLETTER_KEY_LIMIT = 4 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
        }


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One Kafka record as it arrived, before any decoding."""

    value: bytes | None
    source: Source
    key: bytes | None = None
    #: Kafka headers as received (``traceparent`` is continued on every output).
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a raw record could not become an event; ``code`` is one of the dead-letter schema's codes."""

    raw: RawEvent
    code: str
    message: str
    field: str | None = None
    id: str | None = None

    @classmethod
    def decoder_error(cls, raw: RawEvent, exc: Exception) -> DecodeFailure:
        """A decoder bug met on ``raw``: that record is dead-lettered with the reason, not its batch failed."""
        return cls(raw, "processing_failed", f"decoding failed: {type(exc).__name__}: {exc}")

    def __post_init__(self) -> None:
        # What a dead letter repeats of its input (id, and a message that may quote it) stays small: an id of
        # megabytes would make the dead letter, its headers and its log line larger than the brokers accept,
        # and a record they refuse would block the batch behind it. The raw value keeps the whole input.
        if self.id is not None and len(self.id) > MAX_FAILURE_ID_CHARS:
            object.__setattr__(self, "id", _clipped(self.id, MAX_FAILURE_ID_CHARS))
        if len(self.message) > MAX_FAILURE_MESSAGE_CHARS:
            object.__setattr__(self, "message", _clipped(self.message, MAX_FAILURE_MESSAGE_CHARS))
        if self.field is not None and len(self.field) > MAX_FAILURE_ID_CHARS:
            object.__setattr__(self, "field", _clipped(self.field, MAX_FAILURE_ID_CHARS))


#: Longest id (and field path) a dead letter repeats: the ticket schema's own id limit.
MAX_FAILURE_ID_CHARS = 200
#: Longest error message a dead letter carries.
MAX_FAILURE_MESSAGE_CHARS = 1000


def _clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was (so a clipped id never passes for a real one)."""
    suffix = f"…[{len(text)} chars]"
    return text[: max(limit - len(suffix), 0)] + suffix


@dataclass(frozen=True, slots=True)
class Ticket:
    """A validated support ticket (``ticket.v1.json``) and the text the models read."""

    id: str
    payload: Mapping[str, Any]
    source: Source
    key: bytes | None
    text: str
    truncated: bool

    @property
    def subject(self) -> str:
        return str(self.payload.get("subject") or "")

    @property
    def body(self) -> str:
        return str(self.payload["body"])

    @property
    def customer_tier(self) -> str | None:
        customer = self.payload.get("customer") or {}
        tier = customer.get("tier")
        return str(tier).lower() if tier else None

    @property
    def declared_language(self) -> str | None:
        lang = self.payload.get("language")
        return str(lang).split("-")[0].split("_")[0].lower() if lang else None

    @property
    def channel(self) -> str | None:
        channel = self.payload.get("channel")
        return str(channel) if channel else None


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on hostile input: oversize records are dead letters, long texts are cut for the model."""

    max_event_bytes: int = 1_000_000
    max_text_chars: int = 4000
    #: Deepest nesting of objects and arrays accepted. Outputs embed the input two levels down and orjson
    #: cannot write more than 254 levels: a deeper ticket would parse, then fail every send of its batch.
    max_depth: int = 64


def nested_too_deep(doc: Any, limit: int) -> str | None:
    """The top-level field under which ``doc`` nests objects/arrays deeper than ``limit``, else ``None``."""
    stack: list[tuple[Any, int, str]] = [(doc, 1, "")]
    while stack:
        node, depth, top = stack.pop()
        if depth > limit:
            return top or "(root)"
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for name, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, top or str(name)))
    return None


def oversize(raw: RawEvent, value: bytes, max_bytes: int) -> DecodeFailure | None:
    """An ``oversize`` failure when the record's value and key together exceed ``max_bytes``: every output
    keeps the key beside a value about the input's size, and must still fit the producer's request limit."""
    key = len(raw.key) if raw.key is not None else 0
    if len(value) + key <= max_bytes:
        return None
    if len(value) > max_bytes:
        return DecodeFailure(raw, "oversize", f"value is {len(value)} bytes, more than the limit of {max_bytes}")
    return DecodeFailure(
        raw, "oversize", f"key and value are {key + len(value)} bytes (key {key}), more than the limit of {max_bytes}"
    )


def _parse_json_object(raw: RawEvent, limits: DecodeLimits) -> dict[str, Any] | DecodeFailure:
    """Size, UTF-8, JSON and object checks, in that order: the cheapest rejection first."""
    value = raw.value
    if value is None:
        return DecodeFailure(raw, "not_an_object", "record has no value (tombstone)")
    too_large = oversize(raw, value, limits.max_event_bytes)
    if too_large is not None:
        return too_large
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeFailure(raw, "invalid_utf8", f"not UTF-8 at byte {exc.start}: {exc.reason}")
    try:
        doc = orjson.loads(value.removeprefix(codecs.BOM_UTF8))  # some Windows producers prepend one
    except orjson.JSONDecodeError as exc:
        return DecodeFailure(raw, "invalid_json", f"not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return DecodeFailure(raw, "not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    return doc


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# RFC 3339 writes a leap second as second 60 (23:59:60Z), which datetime cannot hold: it is checked as 59.
_LEAP_SECOND = re.compile(r"(?<=[Tt ]\d{2}:\d{2}:)60(?=[.,Zz+\-]|$)")


def timestamp_problem(value: str) -> str | None:
    """Why ``value`` is not an RFC 3339 date-time (what ``ticket.v1.json`` declares), or ``None``.

    A date alone or a time without a zone is refused, not guessed: read as UTC it would be hours off for
    a platform that meant local time, and the record written out would not be what the schema promises.
    """
    if _DATE_ONLY.match(value):
        return "a date without a time; send a date-time with its zone, e.g. 2026-11-27T10:00:00Z"
    zoned = value.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(_LEAP_SECOND.sub("59", zoned, count=1))
    except ValueError:
        return "not an ISO-8601 date-time"
    if moment.tzinfo is None:
        return "no time zone; add Z (UTC) or an offset such as +02:00"
    return None


def ticket_text(payload: Mapping[str, Any]) -> str:
    """What the models read: the subject, when there is one, then the body."""
    subject = str(payload.get("subject") or "").strip()
    body = str(payload["body"]).strip()
    return f"{subject}\n{body}" if subject else body


def decode_record(
    raw: RawEvent, validator: Draft202012Validator, limits: DecodeLimits
) -> dict[str, Any] | DecodeFailure:
    """Bytes to a JSON object valid against ``validator``, or a failure naming the first bad field.

    Shared by every topic whose values are JSON documents with an ``id`` (tickets, escalations).
    """
    doc = _parse_json_object(raw, limits)
    if isinstance(doc, DecodeFailure):
        return doc
    record_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    deep = nested_too_deep(doc, limits.max_depth)
    if deep is not None:
        message = f"{deep}: nested deeper than {limits.max_depth} levels"
        return DecodeFailure(raw, "schema", message, field=deep, id=record_id)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        path = list(first.absolute_path)
        message = first.message
        if first.validator == "required" and isinstance(first.instance, dict):
            # jsonschema reports a missing property at its parent (``$`` for a top-level one): name it.
            missing = [name for name in first.validator_value if name not in first.instance]
            if missing:
                path.append(missing[0])
                message = "is required and missing"
        where = error_path(path)
        return DecodeFailure(raw, "schema", f"{where}: {message}", field=where, id=record_id)
    return doc


def decode_ticket(raw: RawEvent, validator: Draft202012Validator, limits: DecodeLimits) -> Ticket | DecodeFailure:
    """Bytes to a validated ``Ticket``, or a failure naming the first bad field."""
    doc = decode_record(raw, validator, limits)
    if isinstance(doc, DecodeFailure):
        return doc
    ticket_id = doc["id"]
    problem = timestamp_problem(doc["created_at"])
    if problem is not None:
        return DecodeFailure(raw, "schema", f"created_at: {problem}", field="created_at", id=ticket_id)
    if not doc["body"].strip():
        return DecodeFailure(raw, "schema", "body: is blank", field="body", id=ticket_id)
    text = ticket_text(doc)
    truncated = len(text) > limits.max_text_chars
    return Ticket(
        id=doc["id"],
        payload=doc,
        source=raw.source,
        key=raw.key,
        text=text[: limits.max_text_chars] if truncated else text,
        truncated=truncated,
    )


def _raw_section(raw: RawEvent) -> dict[str, Any]:
    value = raw.value or b""
    cut = len(value) > DEADLETTER_RAW_LIMIT
    kept = value[:DEADLETTER_RAW_LIMIT]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return {"encoding": encoding, "value": text, "size": len(value), "cut": cut, **_key_section(raw.key)}


def _key_section(key: bytes | None) -> dict[str, Any]:
    """The raw key as text, cut at ``DEADLETTER_KEY_LIMIT`` bytes (``key_cut`` says so)."""
    if key is None:
        return {"key": None}
    cut = len(key) > DEADLETTER_KEY_LIMIT
    text = key[:DEADLETTER_KEY_LIMIT].decode("utf-8", errors="backslashreplace")
    return {"key": text, "key_cut": True} if cut else {"key": text}


def _digest_section(raw: RawEvent) -> dict[str, Any]:
    value = raw.value or b""
    return {
        "encoding": "digest",
        "value": "",
        "sha256": hashlib.sha256(value).hexdigest(),
        "size": len(value),
        "cut": False,
        **_key_section(raw.key),
    }


def dead_letter(failure: DecodeFailure, failed_at: str, *, digest_only: bool = False) -> dict[str, Any]:
    """The ``deadletter.v1.json`` record of a failure: raw bytes (base64 if not UTF-8), reason, origin.

    ``digest_only``: keep only the SHA-256 and length of the raw value (no replay possible, nothing of
    the content kept; ``streamer.privacy`` also masks the error message, which may quote the input).
    """
    return {
        "id": failure.id,
        "error": {"code": failure.code, "message": failure.message, "field": failure.field},
        "raw": _digest_section(failure.raw) if digest_only else _raw_section(failure.raw),
        "source": failure.raw.source.to_dict(),
        "failed_at": failed_at,
    }


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: topic, key, the JSON value, headers (``streamer.headers``) and the value's bytes.

    ``payload`` is ``encode(value)`` when the processor already encoded it (``streamer.pipeline.sealed``),
    else empty and the sender encodes; ``data`` gives the bytes either way.
    """

    topic: str
    key: bytes | None
    value: Mapping[str, Any]
    headers: tuple[tuple[str, bytes], ...] = field(default=())
    payload: bytes = b""

    @property
    def data(self) -> bytes:
        return self.payload or encode(self.value)


def encode(value: Mapping[str, Any]) -> bytes:
    """JSON bytes as every streamer topic carries them (UTF-8, no spaces, numpy scalars allowed)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(value: bytes) -> Any:
    """The inverse of ``encode`` for consumers and tests."""
    return orjson.loads(value)
