"""One record that makes the core fail costs only itself: dead-lettered as ``processing_failed``, the rest triaged.

Both processors first triage a batch whole; when that raises, they retry record by record and dead-letter
the records that still fail, so a poison record never sinks (or endlessly redelivers) its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamer.logs.triage as triage_core
from streamer.events import DecodeLimits, RawEvent, Source
from streamer.headers import SOURCE_LOGS, SOURCE_TICKETS, header_map
from streamer.logs.triage import LogTriageState
from streamer.pipeline.logs import LogProcessor
from streamer.pipeline.tickets import TicketProcessor
from streamer.topics import (
    DEADLETTER,
    LOG_TEMPLATES,
    LOGS,
    LOGS_ENRICHED,
    TICKETS,
    TICKETS_ENRICHED,
    SchemaRegistry,
    load_contracts,
)
from streamer.triage.escalation import EscalationPolicy
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import parse_router

REPO = Path(__file__).resolve().parents[3]
POISON = "zebra-poison"


@dataclass
class Scores:
    labels: list[str]
    probs: np.ndarray
    oos_score: np.ndarray


class PoisonedModel:
    """Confident scores for any text, except that a batch holding ``POISON`` makes it raise."""

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> dict[str, Scores]:
        if any(POISON in t for t in texts):
            raise ValueError("the model cannot take this input")

        def head(labels: list[str]) -> Scores:
            probs = np.full((len(texts), len(labels)), 0.1 / (len(labels) - 1), dtype=np.float32)
            probs[:, 0] = 0.9
            return Scores(labels, probs, np.zeros(len(texts), dtype=np.float32))

        return {
            "intent": head(["order_status", "refund_request"]),
            "priority": head(["normal", "high"]),
            "sentiment": head(["neutral", "negative"]),
        }


class Classifier:
    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        return [("other", 0.5)] * len(templates)


def ticket(n: int, body: str) -> RawEvent:
    doc = {"id": f"T-{n}", "created_at": "2026-11-28T10:00:00Z", "body": body}
    return RawEvent(orjson.dumps(doc), Source(TICKETS, 0, n, 1_795_860_000_000), f"T-{n}".encode())


def ticket_processor() -> TicketProcessor:
    return TicketProcessor(
        model=PoisonedModel(),
        model_info=ModelInfo("m", "1"),
        router=parse_router({"tickets": {"rules": [], "default": "support.queue.general.v1"}}, "tickets"),
        policy=EscalationPolicy(min_confidence=0.5, min_margin=0.1, oos_threshold=0.5),
        validator=SchemaRegistry(REPO / "topics" / "schemas").validator("ticket.v1.json"),
        limits=DecodeLimits(),
        contracts=load_contracts(REPO / "topics", SOURCE_TICKETS, ("m", "1")),
        clock=lambda: 1_795_860_001.0,
    )


def log_processor(classifier: Any) -> LogProcessor:
    return LogProcessor(
        LogTriageState(),
        classifier,
        ModelInfo("m", "1"),
        DecodeLimits(),
        load_contracts(REPO / "topics", SOURCE_LOGS, ("m", "1")),
        clock=lambda: 1_795_860_001.0,
    )


def test_a_poison_ticket_is_dead_lettered_alone() -> None:
    processor = ticket_processor()
    batch = processor(
        [ticket(1, "where is my order 1"), ticket(2, f"my order {POISON}"), ticket(3, "where is my order 3")]
    )
    assert batch.path == "tickets" and batch.size == 3 and batch.processed == 2
    assert batch.dead_letters == {"processing_failed": 1}
    assert sorted(o.value["id"] for o in batch.outputs if o.topic == TICKETS_ENRICHED) == ["T-1", "T-3"]
    [dead] = [o for o in batch.outputs if o.topic == DEADLETTER]
    assert dead.key == b"T-2" and dead.value["id"] == "T-2"
    assert dead.value["error"]["code"] == "processing_failed"
    assert dead.value["source"]["offset"] == 2
    assert orjson.loads(dead.data) == dead.value  # sealed: encoded in the processing thread
    assert header_map(dead.headers)["ce_type"] == "dev.streamer.deadletter.v1"


def test_a_ticket_the_decoder_fails_on_is_dead_lettered_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamer.pipeline.tickets as ticket_pipeline

    real = ticket_pipeline.decode_ticket

    def flawed(raw: RawEvent, *args: Any) -> Any:
        if raw.key == b"T-2":
            raise KeyError("a decoder bug")
        return real(raw, *args)

    monkeypatch.setattr(ticket_pipeline, "decode_ticket", flawed)
    processor = ticket_processor()
    batch = processor([ticket(1, "where is my order 1"), ticket(2, "where is my order 2"), ticket(3, "order 3")])
    assert batch.processed == 2 and batch.dead_letters == {"processing_failed": 1}
    assert sorted(o.value["id"] for o in batch.outputs if o.topic == TICKETS_ENRICHED) == ["T-1", "T-3"]
    [dead] = [o for o in batch.outputs if o.topic == DEADLETTER]
    assert dead.key == b"T-2" and dead.value["error"]["message"] == "decoding failed: KeyError: 'a decoder bug'"


def test_a_poison_log_line_is_dead_lettered_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    extract = triage_core.extract_log_entities

    def poisoned(message: str, fields: Any) -> dict[str, Any]:
        if POISON in message:  # a line one stage of the core cannot take
            raise ValueError("the extractor cannot take this input")
        return extract(message, fields)

    monkeypatch.setattr(triage_core, "extract_log_entities", poisoned)
    processor = log_processor(Classifier())
    lines = ["user 7 logged in", f"disk {POISON} failed", "user 9 logged in", "cache warmed in 12 ms"]
    raws = [RawEvent(line.encode(), Source(LOGS, 0, i, 1_795_860_000_000 + i), b"auth") for i, line in enumerate(lines)]
    batch = processor(raws)
    assert batch.path == "logs" and batch.size == 4 and batch.processed == 3
    assert batch.dead_letters == {"processing_failed": 1}
    assert batch.events_in == {LOGS: 4}
    assert sorted(batch.source_timestamps_ms) == [1_795_860_000_000, 1_795_860_000_002, 1_795_860_000_003]
    enriched = [o for o in batch.outputs if o.topic == LOGS_ENRICHED]
    assert [o.value["source"]["offset"] for o in enriched] == [0, 2, 3]
    assert all(o.key == b"auth" and orjson.loads(o.data) == o.value for o in enriched)
    [dead] = [o for o in batch.outputs if o.topic == DEADLETTER]
    assert dead.value["error"]["code"] == "processing_failed" and dead.value["source"]["offset"] == 1
    assert dead.key == b"auth"
    # each line counted once in the miner: the failed attempt moved no state before the retry
    counts = {o.value["template"]: processor.state.miner.count(o.value["template_id"]) for o in enriched}
    assert counts == {"user <*> logged in": 2, "cache warmed in <*> ms": 1}
    assert not any("disk" in t.text for t in processor.state.miner.templates())  # the poison line was never mined
    # the lines that were triaged are in the model's view: the batch after is not poisoned by the state
    after = processor([RawEvent(b"user 11 logged in", Source(LOGS, 0, 4, 1_795_860_000_004), b"auth")])
    assert after.processed == 1 and not after.dead_letters


def test_lines_the_incident_model_fails_on_are_dead_lettered_once_and_the_rest_go_on() -> None:
    """A model failure is not a poison line: retrying line by line would count every line in the miner again
    and call the failing model once per line. Lines of templates already classed go on."""

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0
            self.down = False

        def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
            self.calls += 1
            if self.down:
                raise TimeoutError("model server did not answer")
            return [("routine", 0.9)] * len(templates)

    model = Flaky()
    processor = log_processor(model)

    def raws(lines: list[str], first: int) -> list[RawEvent]:
        return [
            RawEvent(x.encode(), Source(LOGS, 0, first + i, 1_795_860_000_000 + first + i), b"auth")
            for i, x in enumerate(lines)
        ]

    assert processor(raws(["user 7 logged in"], 0)).processed == 1
    model.down, model.calls = True, 0
    batch = processor(raws(["user 8 logged in", "disk sda failed", "user 9 logged in", "disk sdb failed"], 1))
    assert model.calls == 1  # once for the batch, not once per line
    assert batch.processed == 2 and batch.dead_letters == {"processing_failed": 2}
    assert sorted(batch.source_timestamps_ms) == [1_795_860_000_001, 1_795_860_000_003]  # dead letters not timed
    dead = [o.value for o in batch.outputs if o.topic == DEADLETTER]
    assert [d["source"]["offset"] for d in dead] == [2, 4]
    assert all("incident model failed: TimeoutError" in d["error"]["message"] for d in dead)
    assert processor.state.miner.count(next(t.id for t in processor.state.miner.templates() if "user" in t.text)) == 3
    model.down = False
    again = processor(raws(["disk sdc failed"], 5))
    assert again.processed == 1 and not again.dead_letters
    assert any(o.topic == LOG_TEMPLATES and "disk" in o.value["template"] for o in again.outputs)


_FIELD_KEYS = st.sampled_from(
    ["level", "severity", "ts", "time", "@timestamp", "service", "logger", "kubernetes", "id", "host", "status",
     "trace_id", "user", "email", "fields"],
)  # fmt: skip
_FIELD_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.text(st.characters(categories=("Nd", "No")).filter(str.isdigit), min_size=1)
    | st.sampled_from(["4111 1111 1111 1111", "ana@example.com", "10.0.0.1", "+1 555 123 4567", "ERROR", "404"])
)  # fmt: skip
_FIELD_VALUES = st.recursive(
    _FIELD_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | _FIELD_KEYS, inner, max_size=3),
    max_leaves=8,
)
_JSON_LINES = st.builds(
    lambda message, doc: orjson.dumps({**doc, "message": message}),
    st.text(min_size=1, max_size=60),
    st.dictionaries(_FIELD_KEYS, _FIELD_VALUES, max_size=6),
)
_TEXT_LINES = st.builds(
    lambda head, body: (head + body).encode("utf-8", "surrogatepass"),
    st.sampled_from(
        [
            "",
            "2026-11-28T10:00:00Z ERROR ",
            "<34>Nov 28 10:00:00 h p[1]: ",
            "level=error ts=1795860001.5 msg=",
            "E1128 10:00:00.1 1 a] ",
            "03-17 16:13:38.811  1702  2395 D Wm: ",
        ],
    ),
    st.text(max_size=80),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            _JSON_LINES | _TEXT_LINES, st.none() | st.binary(max_size=10), st.none() | st.integers(-(2**63), 2**63 - 1)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_no_field_value_line_or_kafka_timestamp_makes_a_log_record_fail(
    items: list[tuple[bytes, bytes | None, int | None]],
) -> None:
    """Whatever types a shipper writes, each record is triaged or dead-lettered for what it is, never for a bug."""
    processor = log_processor(Classifier())
    raws = [RawEvent(value, Source(LOGS, 0, i, ts), key) for i, (value, key, ts) in enumerate(items)]
    batch = processor(raws)
    assert batch.processed + sum(batch.dead_letters.values()) == len(raws)
    assert "processing_failed" not in batch.dead_letters, [
        o.value["error"] for o in batch.outputs if o.topic == DEADLETTER
    ]
