"""The log processor: a batch of raw log records to sealed output records, and the incident model adapter.

Kafka-free: the log service (``streamer.agents.logs``) runs it in its one triage thread (the triage state
is not thread-safe) and only moves bytes; ``streamer triage logs --file`` and the benchmarks run the same
processor. Per batch: decode (``streamer.logs.decode``), ``triage_logs`` (the incident model sees only
templates it has not classified before), then every record is rendered by the privacy policy, given its
CloudEvents headers and encoded here, as one ``Output`` whose topic and key are decided here:

* ``ops.logs.enriched.v1``, one per line, and ``ops.alerts.v1``: keyed by service;
* ``llm.escalations.v1``: keyed by the escalation id (the input id, as for tickets, so the large model's
  answer joins back);
* ``ops.log_templates.v1``: new and changed templates, keyed by template id (the topic is compacted);
* ``streamer.deadletter.v1``: undecodable lines and lines the core failed on, with the reason (input key).

A line that makes the core fail (``processing_failed``) is dead-lettered alone: the batch is retried line
by line. A failing incident model is not a poison line: the lines of the templates it could not class are
dead letters with its error (``streamer dlq resend`` once it is back), the others go on, with no retry (the
miner has counted every line once, and a failing model would be called once per line). With ``hold``, a
batch's enriched records leave with the next batch (``flush`` releases them), resolved to the templates
that batch mined.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from streamer.errors import ConfigError
from streamer.events import DecodeFailure, DecodeLimits, Output, RawEvent, Source, encode
from streamer.headers import Contracts, TraceParent, event_id, incoming_trace, subject_of
from streamer.logs.decode import Layouts, LogRecord, decode_logs, format_time_ms
from streamer.logs.routes import destinations
from streamer.logs.triage import IncidentClassifier, LogBatchResult, LogTriageState, resolve_enriched, triage_logs
from streamer.pipeline.batch import Batch, log_dead_letter
from streamer.pipeline.bundle import Bundle
from streamer.privacy import Privacy
from streamer.topics import ALERTS, DEADLETTER, ESCALATIONS, LOG_TEMPLATES, LOGS_ENRICHED
from streamer.tracing import InputTrace, Tracing
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import Router

__all__ = ["INCIDENT_HEAD", "BundleIncidentClassifier", "LogProcessor"]

log = structlog.get_logger(__name__)

#: The bundle head that classifies log templates.
INCIDENT_HEAD = "incident"


class BundleIncidentClassifier:
    """The ``incident`` head of a bundle as the log core's ``IncidentClassifier``.

    The core calls it once per batch with only the templates it has not classified yet, so the encoder
    runs once per template, never per line.

    Args:
        bundle: a loaded bundle (``streamer.models.bundle.Bundle``).
        head: the head to use (default ``incident``).
        oos_label: the class given to templates the head calls out of scope (far from every class it was
            trained on), when the head has that label (default ``other``); ``None`` keeps the top class.

    ``calls`` and ``classified`` count model calls and templates, to show that the model runs per template.
    """

    def __init__(self, bundle: Bundle, *, head: str = INCIDENT_HEAD, oos_label: str | None = "other") -> None:
        if head not in bundle.heads:
            raise ConfigError(f"bundle {getattr(bundle, 'path', '')} lacks the log head {head!r}")
        self.bundle = bundle
        self.head = head
        self.oos_label = oos_label if oos_label in bundle.heads[head].labels else None
        self.calls = 0
        self.classified = 0

    def classify_templates(self, templates: Sequence[str]) -> list[tuple[str, float]]:
        if not templates:
            return []
        out = self.bundle.predict(list(templates), heads=[self.head])[self.head]
        self.calls += 1
        self.classified += len(templates)
        results: list[tuple[str, float]] = []
        for label, confidence, oos in zip(out.top, out.confidence, out.oos, strict=True):
            name = self.oos_label if oos and self.oos_label is not None else str(label)
            results.append((name, float(confidence)))
        return results


class _Counting:
    """Counts the templates a batch hands to the model (in a ``model`` span when tracing is on)."""

    def __init__(
        self, inner: IncidentClassifier, tracing: Tracing | None = None, parent: Any = None, model: Any = None
    ) -> None:
        self.inner = inner
        self.templates = 0
        self.tracing = tracing
        self.parent = parent
        self.model = model

    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        self.templates += len(templates)
        if self.tracing is None or self.parent is None:
            return self.inner.classify_templates(templates)
        with self.tracing.span("model", self.parent, self.model, batch=len(templates)):
            return self.inner.classify_templates(templates)


#: What a held enriched record keeps until it leaves: the record, its PII values, its trace, the batch time.
_Held = tuple[dict[str, Any], Any, TraceParent, str]


@dataclass
class LogProcessor:
    """Decode + triage + encode one batch of raw log records; runs in the log thread, owns ``state``."""

    state: LogTriageState
    classifier: IncidentClassifier
    model_info: ModelInfo
    limits: DecodeLimits
    #: Output headers (``streamer.headers``: ``streamer.runtime.log_contracts`` for a worker's settings).
    contracts: Contracts
    clock: Callable[[], float] = time.time
    #: Spans (``streamer.tracing``): one batch span linked to the lines and the model's; no per-line spans.
    tracing: Tracing = field(default_factory=Tracing)
    #: Applied to every record just before it is encoded (default: everything masked, raw dead letters).
    privacy: Privacy = field(default_factory=Privacy)
    #: Per-service text layouts (``STREAMER_LOG_LAYOUTS``), compiled.
    layouts: Layouts = field(default_factory=dict)
    #: Hold each batch's enriched records until the next batch is mined (``STREAMER_LOG_HOLD_BATCH``).
    hold: bool = False
    #: The ``logs`` rules of ``routes.yaml``: each enriched record also leaves on the team topics they name.
    router: Router | None = None
    _keys: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _traces: dict[tuple[str, int, int], TraceParent] = field(default_factory=dict, init=False, repr=False)
    _held: list[_Held] = field(default_factory=list, init=False, repr=False)
    #: This batch's copies for team topics, per topic: they leave after the fixed topics, one run per topic.
    _routed: dict[str, list[Output]] = field(default_factory=dict, init=False, repr=False)

    def flush(self) -> Batch:
        """The enriched records held back from the last batch, resolved to the current templates."""
        batch = Batch(path="logs")
        started = time.perf_counter()
        batch.processed = self._release_held(batch)
        self._send_routed(batch)
        batch.encode_s = time.perf_counter() - started
        return batch

    def _release_held(self, batch: Batch) -> int:
        """Held records, resolved (and routed) now, with the trace and time they were triaged under."""
        held, self._held = self._held, []
        resolve_enriched([record for record, _, _, _ in held], self.state, self.router)
        for record, values, trace, now in held:
            self._leave(batch, record, values, trace, now)
        return len(held)

    def _leave(self, batch: Batch, record: dict[str, Any], values: Any, trace: TraceParent, now: str) -> None:
        """One enriched record on ``ops.logs.enriched.v1`` and on each team topic of its ``routes``: each copy
        rendered by its topic's privacy policy, with its headers, encoded."""
        key = self._key(record["service"])
        plain: bytes | None = None
        confidence = self._confidence(record["template_id"])
        for topic in destinations(record):
            headers = self.contracts.headers(
                topic,
                event_id=event_id(topic, record["source"], None),
                time=now,
                trace=trace,
                subject=subject_of(record),
                confidence=confidence,
            )
            value = self.privacy.log_record(record, values, topic) if values else record
            if value is record:
                data = plain = plain if plain is not None else encode(record)
            else:
                data = encode(value)
            out = Output(topic, key, value, headers, data)
            if topic == LOGS_ENRICHED:
                batch.outputs.append(out)
            else:
                self._routed.setdefault(topic, []).append(out)
                batch.routes[topic] += 1

    def _send_routed(self, batch: Batch) -> None:
        routed, self._routed = self._routed, {}
        for copies in routed.values():
            batch.outputs.extend(copies)

    def __call__(self, raws: Sequence[RawEvent]) -> Batch:
        # Lines keep the trace they came with; the others each start one (no span: see streamer.tracing).
        self._traces = {
            (src.topic, src.partition, src.offset): found
            for r in raws
            if (found := incoming_trace(r.headers)) is not None
            for src in (r.source,)
        }
        if not self.tracing.enabled:
            return self._process(raws, None)
        inputs = [InputTrace(self._trace_of(r.source.to_dict())) for r in raws]
        with self.tracing.batch(inputs, size=len(raws)) as batch_span:
            return self._process(raws, batch_span)

    def _trace_of(self, source: Mapping[str, Any] | None) -> TraceParent:
        if source is None:
            return TraceParent.new()
        key = (source["topic"], source["partition"], source["offset"])
        found = self._traces.get(key)
        if found is None:
            found = self._traces[key] = TraceParent.new()
        return found

    def _process(self, raws: Sequence[RawEvent], batch_span: Any) -> Batch:
        batch = Batch(path="logs", size=len(raws))
        for raw in raws:
            batch.events_in[raw.source.topic] += 1
        started = time.perf_counter()
        records, failures = decode_logs(raws, self.limits, self.layouts)
        decoded = time.perf_counter()
        now = format_time_ms(int(self.clock() * 1000))
        counting = _Counting(self.classifier, self.tracing, batch_span, self.model_info.to_dict())
        triaged_records: list[LogRecord] = records
        raw_of: dict[Source, RawEvent] = {}

        def processing_failed(record: LogRecord, reason: str) -> None:
            if not raw_of:
                raw_of.update((raw.source, raw) for raw in raws)
            raw = raw_of.get(record.source) or RawEvent(None, record.source, record.key)
            failures.append(DecodeFailure(raw, "processing_failed", reason, id=record.id))

        try:
            results = [triage_logs(records, self.state, counting, model=self.model_info, now=now, router=self.router)]
        except Exception:
            # One poison line must not sink its batch: retry line by line, dead-letter what still fails.
            log.exception("log batch triage failed; retrying line by line", batch=len(records))
            results, triaged_records = [], []
            for record in records:
                try:
                    results.append(
                        triage_logs([record], self.state, counting, model=self.model_info, now=now, router=self.router)
                    )
                    triaged_records.append(record)
                except Exception as exc:
                    processing_failed(record, f"{type(exc).__name__}: {exc}"[:500])
        triaged = time.perf_counter()
        model_failed = {record.source for result in results for record, _ in result.failed}
        for result in results:
            for record, reason in result.failed:
                processing_failed(record, reason)
        batch.source_timestamps_ms = [
            ts
            for record in triaged_records
            if (ts := record.source.timestamp_ms) is not None and record.source not in model_failed
        ]
        out = batch.outputs
        if self.hold:  # the last batch's enriched records leave now, resolved with this batch's evidence
            batch.processed = self._release_held(batch)
        for result in results:
            self._encode(result, batch, now)
        for failure in failures:
            dead = self.privacy.dead_letter(failure, now)
            headers = self._headers(DEADLETTER, dead, now, dead["source"], failure.id)
            out.append(Output(DEADLETTER, failure.raw.key, dead, headers, encode(dead)))
            batch.dead_letters[failure.code] += 1
            log_dead_letter(failure, "log record dead-lettered")
        self._send_routed(batch)
        batch.classified = counting.templates
        batch.decode_s, batch.inference_s = decoded - started, triaged - decoded
        batch.encode_s = time.perf_counter() - triaged
        return batch

    def _key(self, service: str) -> bytes:
        key = self._keys.get(service)
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            key = self._keys[service] = service.encode()
        return key

    def _headers(
        self,
        topic: str,
        record: Mapping[str, Any],
        now: str,
        source: Mapping[str, Any] | None,
        record_id: str | None,
        confidence: float | None = None,
    ) -> tuple[tuple[str, bytes], ...]:
        return self.contracts.headers(
            topic,
            event_id=event_id(topic, source, record_id),
            time=now,
            trace=self._trace_of(source),
            subject=subject_of(record),
            confidence=confidence,
        )

    def _confidence(self, template_id: Any) -> float | None:
        found = self.state.classes.get(template_id)
        return found[1] if found is not None else None

    def _encode(self, result: LogBatchResult, batch: Batch, now: str) -> None:
        """``result``'s records as outputs, in the order the service sends them: enriched lines first."""
        out = batch.outputs
        head = self._headers
        processed = 0
        for i, record in enumerate(result.enriched):
            values = result.pii[i] if result.pii else None
            trace = self._trace_of(record["source"])
            if self.hold:
                self._held.append((record, values, trace, now))
            else:
                self._leave(batch, record, values, trace, now)
                processed += 1
        batch.processed += processed
        for alert in result.alerts:
            headers = head(ALERTS, alert, now, None, alert["id"], self._confidence(alert["template_id"]))
            out.append(Output(ALERTS, self._key(alert["service"]), alert, headers, encode(alert)))
            batch.alerts[alert["kind"]] += 1
        for escalation in result.escalations:
            confidence = escalation["candidates"][0]["confidence"] if escalation["candidates"] else None
            headers = head(ESCALATIONS, escalation, now, escalation["source"], None, confidence)
            out.append(Output(ESCALATIONS, escalation["id"].encode(), escalation, headers, encode(escalation)))
            for reason in escalation["reasons"]:
                batch.escalations[reason["code"]] += 1
        batch.escalated += len(result.escalations)
        for template in result.templates:
            confidence = template.get("incident_confidence")
            headers = head(LOG_TEMPLATES, template, now, None, template["template_id"], confidence)
            out.append(Output(LOG_TEMPLATES, template["template_id"].encode(), template, headers, encode(template)))
        batch.templates += len(result.templates)
