"""Property tests: whatever bytes arrive, decoding never raises and every input ends as exactly one
decision (an enriched record) or exactly one dead letter, and every output can be written.

The generated inputs are arbitrary bytes, JSON documents shaped like tickets with fields of any type,
deeply nested documents, and valid tickets mutated (cut, bytes flipped or inserted). ``TicketProcessor``
runs the whole per-batch path (decode, model, extraction and redaction, routing, escalation, records) with
a small deterministic model, so the redactor and the extractor see every decoded text too.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.events import DecodeFailure, DecodeLimits, RawEvent, Source, Ticket, dead_letter, decode_ticket, encode
from streamer.headers import SOURCE_TICKETS
from streamer.pipeline.tickets import TicketProcessor
from streamer.topics import DEADLETTER, ESCALATIONS, TICKETS_ENRICHED, SchemaRegistry, load_contracts
from streamer.triage.escalation import EscalationPolicy
from streamer.triage.extract import Extraction, extract
from streamer.triage.outputs import ModelInfo
from streamer.triage.pii import Redaction, redact
from streamer.triage.routing import parse_router

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
VALIDATOR = REGISTRY.validator("ticket.v1.json")
LIMITS = DecodeLimits(max_event_bytes=20_000, max_text_chars=500)
SCHEMA_OF = {
    TICKETS_ENRICHED: "enriched_ticket.v1.json",
    ESCALATIONS: "escalation.v1.json",
    DEADLETTER: "deadletter.v1.json",
}
INTENTS = ["refund_request", "bug_report", "order_status"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Scores:
    labels: list[str]
    probs: np.ndarray
    oos_score: np.ndarray


class HashModel:
    """Deterministic scores from a hash of each text: any text gets some (valid) probabilities."""

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> dict[str, Scores]:
        def probs(labels: list[str], salt: int) -> np.ndarray:
            rows = []
            for text in texts:
                h = zlib.crc32(text.encode("utf-8", "surrogatepass")) ^ salt
                raw = np.array([(h >> (4 * i)) % 13 + 1 for i in range(len(labels))], dtype=np.float32)
                rows.append(raw / raw.sum())
            return np.array(rows, dtype=np.float32).reshape(len(texts), len(labels))

        oos = np.array([(zlib.crc32(t.encode("utf-8", "surrogatepass")) % 100) / 100 for t in texts], np.float32)
        zeros = np.zeros(len(texts), dtype=np.float32)
        priorities, sentiments = ["low", "normal", "high", "urgent"], ["negative", "neutral", "positive"]
        return {
            "intent": Scores(INTENTS, probs(INTENTS, 1), oos),
            "priority": Scores(priorities, probs(priorities, 2), zeros),
            "sentiment": Scores(sentiments, probs(sentiments, 3), zeros),
        }


PROCESSOR = TicketProcessor(
    model=HashModel(),
    model_info=ModelInfo("hash", "1"),
    router=parse_router(
        {
            "tickets": {
                "rules": [{"name": "billing", "match": {"intent": "refund_request"}, "to": "q.billing"}],
                "default": "q.general",
            }
        },
        "tickets",
    ),
    policy=EscalationPolicy(min_confidence=0.5, min_margin=0.1, oos_threshold=0.5),
    validator=VALIDATOR,
    limits=LIMITS,
    contracts=load_contracts(REPO / "topics", SOURCE_TICKETS, ("hash", "1")),
    clock=lambda: 1_764_320_000.0,
)

# ------------------------------------------------------------------------------------------ strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
texts = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list("0123456789 -.+()/:@#[]_\n\t\x00\u202e")),
    ),
    max_size=300,
)
maybe = st.one_of(json_values, texts)
ticket_docs = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(min_size=1, max_size=30), json_values),
        "created_at": st.one_of(st.just("2026-11-28T09:00:00Z"), st.text(max_size=30), json_values),
        "body": st.one_of(texts, json_values),
        "subject": st.one_of(texts, json_values),
        "channel": st.one_of(st.sampled_from(["email", "chat", "web", "carrier pigeon"]), json_values),
        "customer": st.one_of(
            st.fixed_dictionaries({"id": st.text(min_size=1, max_size=10)}, optional={"tier": st.text(max_size=8)}),
            json_values,
        ),
        "language": st.one_of(st.sampled_from(["en", "de", "en-GB", "xx_YY", "english"]), json_values),
        "metadata": st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4), json_values),
    },
)
valid_docs = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=30),
        "created_at": st.just("2026-11-28T09:00:00Z"),
        "body": texts.filter(str.strip),
    },
    optional={"subject": texts, "customer": st.just({"id": "C-1", "tier": "vip"}), "language": st.just("en")},
)


@st.composite
def deep_docs(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=1500))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * (depth - 1) + (b"[]" if opener == b"[" else b"{}") + closer * (depth - 1)
    where = draw(st.sampled_from(["metadata", "body", "root"]))
    if where == "root":
        return inner
    head = b'{"id": "deep", "created_at": "2026-11-28T09:00:00Z", "body": "x", "'
    return head + where.encode() + b'": ' + inner + b"}"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(orjson.dumps(draw(valid_docs)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["cut", "flip", "insert"]))
        pos = draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))
        if op == "cut":
            del raw[pos:]
        elif op == "flip" and raw:
            raw[pos] ^= draw(st.integers(min_value=1, max_value=255))
        else:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


raw_values = st.one_of(
    st.none(),
    st.binary(max_size=300),
    ticket_docs.map(orjson.dumps),
    valid_docs.map(orjson.dumps),
    json_values.map(orjson.dumps),
    deep_docs(),
    mutated(),
    st.binary(min_size=LIMITS.max_event_bytes - 2, max_size=LIMITS.max_event_bytes + 2),
)


def raw(value: bytes | None, i: int = 0) -> RawEvent:
    return RawEvent(value, Source("t", 0, i, 1_764_320_000_000), key=f"k{i}".encode())


# ------------------------------------------------------------------------------------------ properties


@FAST
@given(raw_values)
def test_decode_returns_a_ticket_or_a_dead_letter_and_never_raises(value: bytes | None) -> None:
    decoded = decode_ticket(raw(value), VALIDATOR, LIMITS)
    assert isinstance(decoded, Ticket | DecodeFailure)
    if isinstance(decoded, DecodeFailure):
        record = dead_letter(decoded, "2026-11-28T09:00:00.000Z")
        assert REGISTRY.errors("deadletter.v1.json", record) == []
        assert record["error"]["message"]
        orjson.loads(encode(record))
    else:
        # What the outputs embed (two levels down) must be writable: no nesting orjson cannot encode.
        encode({"a": {"ticket": decoded.payload}})
        assert len(decoded.text) <= LIMITS.max_text_chars
        assert decoded.text.strip()


@FAST
@given(st.lists(raw_values, min_size=1, max_size=6))
def test_every_input_becomes_one_decision_or_one_dead_letter(values: list[bytes | None]) -> None:
    raws = [raw(v, i) for i, v in enumerate(values)]
    result = PROCESSOR(raws)
    enriched = [o for o in result.outputs if o.topic == TICKETS_ENRICHED]
    dead = [o for o in result.outputs if o.topic == DEADLETTER]
    assert sorted(o.key for o in enriched + dead) == sorted(r.key for r in raws)  # type: ignore[type-var]
    assert result.processed == len(enriched)
    assert sum(result.dead_letters.values()) == len(dead)
    for out in result.outputs:
        written = encode(out.value)
        schema = SCHEMA_OF.get(out.topic, "enriched_ticket.v1.json")
        assert REGISTRY.errors(schema, orjson.loads(written)) == [], out.topic
    for out in result.outputs:
        if out.topic == ESCALATIONS:
            # The large model gets redacted text: nothing the redactor finds survives in it.
            body = next(r for r in raws if r.key == out.key)
            decoded = decode_ticket(body, VALIDATOR, LIMITS)
            assert isinstance(decoded, Ticket)
            for span in redact(decoded.body).spans:
                assert span.value not in out.value["redacted_text"]


@FAST
@given(valid_docs)
def test_extraction_and_redaction_of_decoded_text_never_raise(doc: dict[str, Any]) -> None:
    decoded = decode_ticket(raw(orjson.dumps(doc)), VALIDATOR, LIMITS)
    if isinstance(decoded, DecodeFailure):  # e.g. an id the schema refuses
        return
    redaction = redact(decoded.text)
    assert isinstance(redaction, Redaction)
    assert isinstance(extract(decoded.text, redaction), Extraction)
    for span in redaction.spans:
        assert span.value not in redaction.text
