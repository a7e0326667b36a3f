"""Record headers every output carries: CloudEvents binary mode, the deciding model, W3C trace context. Pure.

Downstream services filter and route on headers without decoding values, so each output record says what it
is (``ce_type``, versioned like its JSON Schema, and ``ce_dataschema``, the schema's ``$id``), which input it
comes from (``ce_id``, ``ce_subject``), when it was made (``ce_time``), which model decided it and how sure it
was (the ``ce_modelname``, ``ce_modelversion`` and ``ce_confidence`` extensions) and which request it belongs
to (``traceparent``, continued from the input or a new trace). The ticket path, the log path and the bridge
all build their headers here; no Kafka, no OpenTelemetry, no clock (callers pass the time).

``ce_id`` is unique per output topic and input record, and the same when an input is delivered again
(at-least-once): ``<input topic>-<partition>-<offset>:<output topic>``. Records made from many inputs (alerts,
templates) have no single input; theirs is ``<record id>:<output topic>:<random>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

#: What every header list is: Kafka headers as ``(name, value)`` pairs.
Headers = tuple[tuple[str, bytes], ...]

SPECVERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"
#: ``ce_source`` of each producing path.
SOURCE_TICKETS: Final = "/streamer/tickets"
SOURCE_LOGS: Final = "/streamer/logs"
SOURCE_BRIDGE: Final = "/streamer/bridge"
#: The prefix of ``ce_type``: the reverse of the schemas' domain (``https://streamer.dev/schemas/...``).
TYPE_PREFIX: Final = "dev.streamer."

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A W3C ``traceparent``: the trace, the span that is the parent of what comes next, and the flags."""

    trace_id: str
    span_id: str
    flags: str = "01"
    tracestate: str | None = None

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    @classmethod
    def parse(cls, value: bytes | str | None, tracestate: bytes | str | None = None) -> TraceParent | None:
        """The context in a ``traceparent`` header, or ``None`` when absent or invalid (the spec: start anew)."""
        if value is None:
            return None
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        m = _TRACEPARENT.match(text.strip())
        if m is None:
            return None
        version, trace_id, span_id, flags, rest = m.groups()
        if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        state = tracestate.decode("ascii", "replace") if isinstance(tracestate, bytes) else tracestate
        return cls(trace_id, span_id, flags, state or None)

    @classmethod
    def new(cls, sampled: bool = False) -> TraceParent:
        """A new trace (random ids). Not sampled unless asked: nothing has recorded a span of it."""
        return cls(os.urandom(16).hex(), os.urandom(8).hex(), "01" if sampled else "00")

    def child(self, span_id: str) -> TraceParent:
        """The same trace with ``span_id`` as the parent of what comes next."""
        return TraceParent(self.trace_id, span_id, self.flags, self.tracestate)


def incoming_trace(headers: Iterable[tuple[str, bytes]] | None) -> TraceParent | None:
    """The trace context a record arrived with (``traceparent`` and ``tracestate`` headers), if valid."""
    if not headers:
        return None
    parent: bytes | None = None
    state: bytes | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == TRACEPARENT:
            parent = value
        elif lowered == TRACESTATE:
            state = value
    return TraceParent.parse(parent, state)


def trace_headers(trace: TraceParent) -> dict[str, str]:
    """The trace context as HTTP headers (for the bridge's call to the large model)."""
    out = {TRACEPARENT: trace.header()}
    if trace.tracestate:
        out[TRACESTATE] = trace.tracestate
    return out


def event_type(schema: str) -> str:
    """``ce_type`` of the records of ``schema``: ``enriched_ticket.v1.json`` is ``dev.streamer.enriched_ticket.v1``."""
    return TYPE_PREFIX + schema.removesuffix(".json")


@dataclass(frozen=True, slots=True)
class TopicContract:
    """What is the same on every record of one topic: its CloudEvents type and the schema of its values."""

    topic: str
    type: str
    dataschema: str | None


class Contracts:
    """Header factory of one producing path: per-topic constants encoded once, per-record fields added.

    Args:
        contracts: per declared topic name (``Output.topic``), its type and data schema.
        source: ``ce_source`` of this path (``SOURCE_TICKETS``, ``SOURCE_LOGS`` or ``SOURCE_BRIDGE``).
        model: ``(name, version)`` of the model deciding this path's records (``None``: not a model's record).
    """

    def __init__(
        self, contracts: Mapping[str, TopicContract], source: str, model: tuple[str, str] | None = None
    ) -> None:
        self.contracts = dict(contracts)
        self.source = source
        self.model = model
        self._fixed: dict[str, Headers] = {}
        for topic, contract in self.contracts.items():
            fixed: list[tuple[str, bytes]] = [
                ("ce_specversion", SPECVERSION.encode()),
                ("ce_type", contract.type.encode()),
                ("ce_source", source.encode()),
                ("content-type", CONTENT_TYPE.encode()),
            ]
            if contract.dataschema:
                fixed.append(("ce_dataschema", contract.dataschema.encode()))
            if model is not None:
                fixed.append(("ce_modelname", model[0].encode()))
                if model[1]:
                    fixed.append(("ce_modelversion", model[1].encode()))
            self._fixed[topic] = tuple(fixed)

    def with_model(self, name: str, version: str | None) -> Contracts:
        """The same contracts for records decided by another model (the bridge: the large model's name)."""
        return Contracts(self.contracts, self.source, (name, version or ""))

    def headers(
        self,
        topic: str,
        *,
        event_id: str,
        time: str,
        trace: TraceParent,
        subject: str | None = None,
        confidence: float | None = None,
    ) -> Headers:
        """Every header of one record of ``topic`` (a declared name, without prefix or replay suffix)."""
        fixed = self._fixed.get(topic)
        if fixed is None:  # a topic no contract names: typed after itself, so the record still says what it is
            fixed = self._fixed[topic] = Contracts(
                {topic: TopicContract(topic, TYPE_PREFIX + topic, None)}, self.source, self.model
            )._fixed[topic]
        out = [
            *fixed,
            ("ce_id", event_id.encode()),
            ("ce_time", time.encode()),
            (TRACEPARENT, f"00-{trace.trace_id}-{trace.span_id}-{trace.flags}".encode()),
        ]
        if trace.tracestate:
            out.append((TRACESTATE, trace.tracestate.encode()))
        if subject:
            out.append(("ce_subject", subject.encode()))
        if confidence is not None:
            out.append(("ce_confidence", f"{confidence:.4f}".encode()))
        return tuple(out)


def event_id(topic: str, source: Mapping[str, Any] | None = None, record_id: str | None = None) -> str:
    """``ce_id``: from the input's coordinates when the record has one input, else the record id and a nonce."""
    if source is not None and source.get("offset") is not None:
        return f"{source['topic']}-{source['partition']}-{source['offset']}:{topic}"
    return f"{record_id or 'record'}:{topic}:{os.urandom(6).hex()}"


def subject_of(record: Mapping[str, Any]) -> str | None:
    """``ce_subject`` of a record: the ticket id, or the template id of log records and log escalations."""
    template = record.get("template_id")
    if isinstance(template, str):
        return template
    if record.get("kind") == "log":
        labels = record.get("labels") or {}
        found = labels.get("template_id") if isinstance(labels, Mapping) else None
        return str(found) if found else None
    found_id = record.get("id")
    return str(found_id) if found_id else None


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as a ``name -> text`` dict (the last value wins), for logs and tests."""
    return {name: value.decode("utf-8", "replace") for name, value in headers or ()}
