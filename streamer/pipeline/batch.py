"""The one result type of both processing paths: what a batch produced and what happened to its inputs.

A processor (``streamer.pipeline.tickets`` or ``streamer.pipeline.logs``) turns raw records into a ``Batch``:
its outputs, ready to produce in order, and the counters that metrics, summaries and benchmarks read. The
Kafka adapters never reopen an output to decide its topic or key: the processor decided both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import structlog

from streamer.events import DecodeFailure, Output, encode

__all__ = ["Batch", "Path", "log_dead_letter", "sealed", "utc_iso"]

log = structlog.get_logger(__name__)

#: The two processing paths; also the ``path`` label of every per-path metric.
Path = Literal["tickets", "logs"]


def utc_iso(ts: float) -> str:
    """A Unix time as the RFC 3339 UTC stamp (milliseconds, ``Z``) every output record carries."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sealed(topic: str, key: bytes | None, value: Mapping[str, Any], headers: tuple[tuple[str, bytes], ...]) -> Output:
    """An output whose JSON bytes are encoded now, in the processing thread, not on the event loop."""
    return Output(topic, key, value, headers, encode(value))


@dataclass
class Batch:
    """One batch's outputs and its counters (``Metrics.record_batch`` reads them for either path).

    Counters a path does not have stay empty: a log batch has no intents, a ticket batch no alerts.
    """

    path: Path
    outputs: list[Output] = field(default_factory=list)
    size: int = 0
    """Raw records taken."""
    processed: int = 0
    """Records triaged (not dead-lettered) whose enriched record is in ``outputs``."""
    events_in: Counter[str] = field(default_factory=Counter)
    """Records taken per source topic (as named on the cluster)."""
    source_timestamps_ms: list[int] = field(default_factory=list)
    """Kafka timestamps of the records whose outputs this batch carries (for end-to-end latency)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    escalations: Counter[str] = field(default_factory=Counter)
    """Escalation reasons given (a record with two reasons counts in both)."""
    escalated: int = 0
    """Escalation records in ``outputs``."""
    model_escalated: int = 0
    """Tickets escalated for the intent model's doubt (what the escalation budget spends)."""
    deduplicated: int = 0
    """Escalations not sent because they near-duplicate an earlier one."""
    shadow_agreement: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    """``(head, live label, shadow agreed)`` counts when a shadow bundle runs."""
    intents: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    """Route names matched (tickets and logs)."""
    alerts: Counter[str] = field(default_factory=Counter)
    """Alerts raised per kind (logs)."""
    templates: int = 0
    """New or changed log templates published."""
    classified: int = 0
    """Log templates the incident model saw in this batch."""
    inference_s: float = 0.0
    """Seconds in the triage core and model (decode and encode excluded)."""
    decode_s: float = 0.0
    encode_s: float = 0.0
    spans: list[Any] = field(default_factory=list)
    """Trace spans to end once the outputs are acknowledged (empty unless tracing is on)."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """Next offset to commit per ``(topic, partition)``, set by the adapter that owns the commit."""

    def output_counts(self) -> Counter[str]:
        """Outputs per declared topic."""
        return Counter(out.topic for out in self.outputs)


def log_dead_letter(failure: DecodeFailure, event: str = "record dead-lettered") -> None:
    """Where it came from and why, never the content: the message may quote the input (schema errors do)."""
    source = failure.raw.source
    log.info(
        event,
        event_id=failure.id,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        code=failure.code,
        field=failure.field,
    )
