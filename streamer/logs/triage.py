"""Log triage on a batch: redact, mine templates, extract, classify new templates, count bursts, escalate.

Pure: no I/O, no clock, deterministic for a given state and batch. The state (templates, their
incident classes, burst baselines, templates already alerted on) lives in ``LogTriageState``, which
the adapter snapshots and restores; the incident model is injected, and runs once per new template,
never per line.

What leaves the core is PII-free: messages are redacted before anything else reads them, so
templates, samples, alerts and escalations are built from redacted text only.

Per batch:
1. redact each message (numbered placeholders in what leaves, ``<KIND>`` masks in what is mined, so
   ``[IP_1]``/``[IP_2]`` do not split a template); mine the template of its headline (first line,
   plus the exception type of a stack trace, so a traceback is grouped by what was thrown, not by
   ``Traceback (most recent...``);
2. resolve every line to its template as of the end of the batch, move counters of superseded
   templates to their successors, and classify the templates the classifier has not seen, in one call;
3. enrich each record; count it for bursts; raise ``new_error_template`` the first time a template
   is seen at error level and ``burst`` when a window crosses its threshold; escalate both when the
   severity is error or above (reasons ``new_error_template`` / ``error_burst``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from streamer.logs.bursts import Burst, BurstConfig, BurstDetector, ErrorTemplateWatch
from streamer.logs.decode import SEVERITY_RANK, LogRecord, format_time_ms
from streamer.logs.extract import exception_type, extract_log_entities, ip_entities, ip_is_internal
from streamer.logs.routes import Memo, set_routes
from streamer.logs.templates import MinerConfig, Template, TemplateMiner, template_record
from streamer.triage.escalation import Reason, ReasonCode
from streamer.triage.outputs import ModelInfo
from streamer.triage.pii import Redaction, find_ips_only, mask_kinds, redact, redact_spans
from streamer.triage.routing import Router

__all__ = [
    "IncidentClassifier",
    "LogBatchResult",
    "LogTriageConfig",
    "LogTriageState",
    "headline",
    "resolve_enriched",
    "triage_logs",
]

_STATE_VERSION: Final = 1
_UNKNOWN_MODEL: Final = ModelInfo("unknown", "unknown")
# A superset of what streamer.triage.pii can find (emails and URL credentials need '@' or '%40'; IPs a
# dotted quad or hex groups with ':'; phones, cards, IBANs and most national ids seven digits in a
# separated run; UK NI and Italian codes their letter+digit heads). Lines without any skip the
# redactor, which is the most expensive step of log triage; a property test holds the two together.
# Every branch opens on '@', '%', ':' or a digit (letter heads are looked behind), so the search skips
# straight to those instead of trying every letter.
_MAYBE_PII: Final = re.compile(
    r"@|%40|:(?<=[0-9A-Fa-f]:)[0-9A-Fa-f]{0,4}:"
    r"|\d(?:\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}|(?:[\s\-./()+]{0,3}\d){6,}|(?<=[A-Za-z]{2}\d)\d(?: ?\d{2}){2}"
    r"|(?<=[A-Za-z]{2} \d)\d(?: ?\d{2}){2}|(?<=[A-Za-z]{6}\d)\d)"
)


class IncidentClassifier(Protocol):
    """The model side: incident class and confidence for each template text, in order."""

    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]: ...


@dataclass(frozen=True, slots=True)
class LogTriageConfig:
    """Settings of log triage.

    ``escalate_severity``: bursts and new templates at this severity or above go to the large model
    (``error``); ``new_template_severity``: first sightings at or above it raise an alert (``error``);
    ``sample_size``: redacted lines in an escalation's context (5); ``max_message_chars``: longest
    message redacted and kept in outputs, the rest is cut and the original length noted in
    ``entities.truncated_from`` (8000); ``max_mining_chars``: longest headline mined (1024).
    """

    miner: MinerConfig = field(default_factory=MinerConfig)
    bursts: BurstConfig = field(default_factory=BurstConfig)
    escalate_severity: str = "error"
    new_template_severity: str = "error"
    sample_size: int = 5
    max_message_chars: int = 8000
    max_mining_chars: int = 1024


class LogTriageState:
    """Everything log triage remembers between batches; one per worker (not thread-safe)."""

    def __init__(self, config: LogTriageConfig | None = None) -> None:
        self.config = config or LogTriageConfig()
        self.miner = TemplateMiner(self.config.miner)
        self.bursts = BurstDetector(self.config.bursts)
        self.watch = ErrorTemplateWatch(min_severity=self.config.new_template_severity)
        self.classes: dict[str, tuple[str, float]] = {}

    def snapshot(self) -> bytes:
        """Templates, classes, burst baselines and alerted templates as JSON bytes."""
        return orjson.dumps(
            {
                "version": _STATE_VERSION,
                "templates": [self.template_record(t) for t in self.miner.templates()],
                "bursts": self.bursts.state(),
                "alerted": self.watch.seen(),
            }
        )

    @classmethod
    def restore(cls, data: bytes, config: LogTriageConfig | None = None) -> LogTriageState:
        """A state from ``snapshot()`` bytes."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION:
            raise ValueError("not a log triage snapshot of a known version")
        state = cls(config)
        state.load_templates(doc.get("templates") or ())
        state.bursts.load_state(doc.get("bursts") or {})
        for tid in doc.get("alerted") or ():
            state.watch.mark_seen(str(tid))
        return state

    def load_templates(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Apply ``ops.log_templates.v1`` records (from this worker or others): templates, classes, alerts."""
        records = list(records)
        self.miner.load(records)
        for rec in records:
            tid = str(rec.get("template_id", ""))
            cls_ = rec.get("incident_class")
            if tid and isinstance(cls_, str) and not rec.get("superseded_by"):
                conf = rec.get("incident_confidence")
                self.classes[tid] = (cls_, float(conf) if isinstance(conf, int | float) else 0.0)
            if tid and rec.get("error_seen"):
                self.watch.mark_seen(tid)
        # Loaded templates count as published; templates they supersede are reported by the next batch.

    def template_record(self, template: Template) -> dict[str, Any]:
        """The ``log_template.v1.json`` record of a template, with its class and alert flag."""
        record = template_record(template)
        if template.first_seen_ms is not None:
            record["first_seen"] = format_time_ms(template.first_seen_ms)
        found = self.classes.get(template.id)
        if found is not None:
            record["incident_class"], record["incident_confidence"] = found[0], round(found[1], 4)
        if template.id in self.watch:
            record["error_seen"] = True
        return record


@dataclass(frozen=True, slots=True)
class LogBatchResult:
    """Outputs of one batch, in input order.

    ``enriched``: one ``enriched_log.v1.json`` record per input; ``alerts``: ``alert.v1.json``;
    ``escalations``: ``escalation.v1.json`` (kind ``log``); ``templates``: ``log_template.v1.json``
    records to publish to the compacted templates topic, keyed by ``template_id``.
    """

    enriched: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    escalations: list[dict[str, Any]]
    templates: list[dict[str, Any]]
    #: Per enriched record, ``[KIND_N]`` -> ``(kind, value)`` of its placeholders, for the privacy policy
    #: (which may keep or pseudonymise some kinds on ``ops.logs.enriched.v1``); never serialised as is.
    pii: list[dict[str, tuple[str, str]]] = field(default_factory=list)
    #: Lines whose template the incident model failed on, with the reason: dead letters (the others go on).
    failed: list[tuple[LogRecord, str]] = field(default_factory=list)


def headline(message: str, max_chars: int = 1024) -> str:
    """What is mined for a message: its first line, plus the exception type when it carries a trace."""
    first, nl, rest = message.partition("\n")
    first = first.strip()[:max_chars]
    if nl:
        exc = exception_type(rest)
        if exc is not None and exc not in first:
            return f"{first} {exc}" if first else exc
    return first or message.strip()[:max_chars]


@dataclass(slots=True)
class _Line:
    record: LogRecord
    redacted: str
    pii: dict[str, int]
    template: Template
    redaction: Redaction | None
    entities: dict[str, Any]


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending at whitespace so no token (a half email) is left dangling."""
    if len(text) <= limit:
        return text
    end = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
    return text[: end if end > limit // 2 else limit]


# Redactions of recent messages: logs repeat lines verbatim (health checks, retries, the same client), and a
# redaction depends on the message alone. Bounded in count and in message length; shared results are read-only.
_SEEN: dict[str, Redaction | None] = {}
_SEEN_MAX: Final = 4096
_SEEN_MAX_CHARS: Final = 512


def _redacted(message: str) -> Redaction | None:
    """The message redacted (numbered placeholders), or None when it holds no personal data."""
    if not _MAYBE_PII.search(message):
        return None
    if message in _SEEN:
        return _SEEN[message]
    spans = find_ips_only(message)  # exact, and much cheaper on the usual log line
    r = redact_spans(message, spans) if spans is not None else redact(message)
    found = r if r.spans else None
    if len(message) <= _SEEN_MAX_CHARS:
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[message] = found
    return found


def _ip_entities(redacted: str, red: Redaction | None) -> dict[str, Any]:
    """Internal addresses by placeholder (``ips``, what on-call pivots on), public ones only counted.

    The placeholders stand for the values: the privacy policy of the output topic decides whether
    they leave masked, pseudonymised or in clear. Addresses the redactor leaves in the text (``::1``)
    are listed as written.
    """
    internal: list[str] = []
    public = 0
    if red is not None:
        for span, token in zip(red.spans, red.placeholders, strict=True):
            if span.kind != "IP":
                continue
            internal_ip = ip_is_internal(span.value.split("%", 1)[0])
            if internal_ip is True:
                if token not in internal:
                    internal.append(token)
            elif internal_ip is False:
                public += 1
    left = ip_entities(redacted)
    for text in left.get("ips", ()):
        if text not in internal:
            internal.append(text)
    public += left.get("public_ips", 0)
    out: dict[str, Any] = {}
    if internal:
        out["ips"] = internal
    if public:
        out["public_ips"] = public
    return out


def triage_logs(
    records: Sequence[LogRecord],
    state: LogTriageState,
    classifier: IncidentClassifier,
    *,
    model: ModelInfo | None = None,
    now: str | None = None,
    router: Router | None = None,
) -> LogBatchResult:
    """Triage one batch of decoded log records against ``state`` (updated in place).

    ``model`` names the incident model in the outputs; ``now`` is the escalation time (ISO-8601). The
    core reads no clock: without ``now``, an escalation carries its triggering record's timestamp.
    ``router``: the ``logs`` rules of ``routes.yaml``; each enriched record lists the team topics they
    send it to under ``routes`` (``streamer.logs.routes``), and the alerts it raised under ``alerts``.
    """
    cfg = state.config
    model = model or _UNKNOWN_MODEL
    miner = state.miner

    # First what each line's content alone decides (redaction, entities), then the state: a line that one
    # stage cannot take fails the batch before the miner, bursts or watch have moved, so the processor's
    # line-by-line retry counts every line once.
    prepared: list[tuple[LogRecord, str, Redaction | None, str, dict[str, Any]]] = []
    for rec in records:
        cut = _cut(rec.message, cfg.max_message_chars)  # bounds the redactor's work too
        red = _redacted(cut)
        text = red.text if red is not None else cut
        # The miner sees kinds (<IP>), not numbered placeholders that would split one template in two.
        mined = mask_kinds(cut, red.spans) if red is not None else cut
        entities = extract_log_entities(text, rec.fields)
        entities.update(_ip_entities(text, red))
        if red is not None and red.counts:
            entities["pii"] = dict(red.counts)
        if len(rec.message) > cfg.max_message_chars:
            entities["truncated_from"] = len(rec.message)
        prepared.append((rec, text, red, headline(mined, cfg.max_mining_chars), entities))
    lines = [
        _Line(rec, text, red.counts if red is not None else {}, miner.add(head, rec.time_ms), red, entities)
        for rec, text, red, head, entities in prepared
    ]

    changes = miner.changes(consume=False)  # consumed once the model has run: a failed batch can be retried
    for old, new in changes.superseded:
        state.bursts.rename(old.id, new.id)
        state.watch.rename(old.id, new.id)
    final: dict[str, Template] = {}
    for line in lines:
        tid = line.template.id
        resolved = final.get(tid)
        if resolved is None:
            resolved = final[tid] = miner.resolve(tid) or line.template
        line.template = resolved

    unclassified = {t.id: t for t in (*changes.new, *final.values()) if t.id not in state.classes}
    failed: list[tuple[LogRecord, str]] = []
    if unclassified:
        todo = list(unclassified.values())
        try:
            results = list(classifier.classify_templates([t.text for t in todo]))
            if len(results) != len(todo):
                raise ValueError(f"classifier returned {len(results)} classes for {len(todo)} templates")
        except Exception as exc:
            # The miner has counted these lines: failing the batch would have them retried (and counted) again,
            # with one model call per line. The lines of templates the model could not class are dead letters;
            # the rest go on, and the templates stay unclassed (and unannounced) until a batch classes them.
            why = f"incident model failed: {type(exc).__name__}: {exc}"[:500]
            failed = [(line.record, why) for line in lines if line.template.id in unclassified]
            lines = [line for line in lines if line.template.id not in unclassified]
        else:
            for t, (label, confidence) in zip(todo, results, strict=True):
                state.classes[t.id] = (str(label), float(confidence))

    enriched: list[dict[str, Any]] = []
    values: list[dict[str, tuple[str, str]]] = []
    alerts: list[dict[str, Any]] = []
    escalations: dict[str, dict[str, Any]] = {}
    alerted_now: list[Template] = []
    escalate_rank = SEVERITY_RANK[cfg.escalate_severity]
    memo: Memo = {}
    for line in lines:
        rec, template = line.record, line.template
        label, confidence = state.classes[template.id]
        message, entities = line.redacted, line.entities
        record: dict[str, Any] = {
            "id": rec.id,
            "source": rec.source.to_dict(),
            "timestamp": rec.timestamp,
            "service": rec.service,
            "severity": rec.severity,
            "template_id": template.id,
            "template": template.text,
            "incident_class": label,
            "message": message,
            "entities": entities,
            "model": model.to_dict(),
        }
        enriched.append(record)
        raised: list[str] = []
        red = line.redaction
        values.append(
            {t: (sp.kind, sp.value) for sp, t in zip(red.spans, red.placeholders, strict=True)} if red else {}
        )
        severe = SEVERITY_RANK.get(rec.severity, 2) >= escalate_rank
        sample = headline(message, 500)
        if state.watch.first_sighting(template.id, rec.severity):
            alerted_now.append(template)
            alerts.append(_new_template_alert(rec, template, label, sample, state.bursts.config.window_ms))
            raised.append("new_error_template")
            if severe:
                reason = Reason(
                    ReasonCode.NEW_ERROR_TEMPLATE,
                    f"first {rec.severity} line of template {template.id} in service {rec.service}",
                )
                context = _context(rec, template, 1, 0.0, None, [sample], state.bursts.config.window_ms)
                _escalate(escalations, line, reason, context, label, confidence, model, now, cfg)
        burst = None
        if rec.time_ms is not None:
            burst = state.bursts.observe(rec.service, template.id, rec.time_ms, rec.severity, sample)
        if burst is not None:
            alerts.append(_burst_alert(burst, template, label))
            raised.append("burst")
            if SEVERITY_RANK.get(burst.severity, 2) >= escalate_rank:
                span_s = (burst.window_end_ms - burst.window_start_ms) / 1000
                reason = Reason(
                    ReasonCode.ERROR_BURST,
                    f"{burst.count} {burst.severity} lines of template {template.id} in a {span_s:g} s window "
                    f"(baseline {burst.baseline:.1f}, threshold {burst.threshold:.0f})",
                )
                context = _context(rec, template, burst.count, burst.baseline, burst, list(burst.samples), 0)
                _escalate(escalations, line, reason, context, label, confidence, model, now, cfg)
        if raised:
            record["alerts"] = raised
        set_routes(record, router, memo)

    if not failed:
        miner.changes()  # else reported again with the next batch, once the model has classed them
    published: dict[str, dict[str, Any]] = {}
    for t in (*changes.new, *alerted_now):
        live = miner.resolve(t.id)
        if live is not None and live.id == t.id and live.id in state.classes:
            published[t.id] = state.template_record(live)
    for old, new in changes.superseded:
        published[old.id] = {"template_id": old.id, "template": old.text, "superseded_by": new.id}
    return LogBatchResult(enriched, alerts, list(escalations.values()), list(published.values()), values, failed)


def resolve_enriched(records: Sequence[dict[str, Any]], state: LogTriageState, router: Router | None = None) -> int:
    """Bring enriched records written earlier up to the current templates (in place); returns how many moved.

    A record held back for a batch and resolved just before it leaves carries the id its template has
    by then, not the one it had when first mined: far fewer ids are superseded after they are published.
    With ``router``, a moved record is routed again (its template and class may be what a rule names).
    """
    moved = 0
    memo: Memo = {}
    for rec in records:
        tid = rec["template_id"]
        template = state.miner.resolve(tid)
        if template is None or template.id == tid:
            continue
        rec["template_id"], rec["template"] = template.id, template.text
        found = state.classes.get(template.id)
        if found is not None:
            rec["incident_class"] = found[0]
        set_routes(rec, router, memo)
        moved += 1
    return moved


def _window(time_ms: int | None, window_ms: int) -> tuple[str, str]:
    start = (time_ms or 0) - (time_ms or 0) % window_ms
    return format_time_ms(start), format_time_ms(start + window_ms)


def _new_template_alert(rec: LogRecord, template: Template, label: str, sample: str, window_ms: int) -> dict[str, Any]:
    start, end = _window(rec.time_ms, window_ms)
    return {
        "id": f"new_error_template:{template.id}",
        "kind": "new_error_template",
        "service": rec.service,
        "template_id": template.id,
        "template": template.text,
        "severity": rec.severity,
        "incident_class": label,
        "window_start": start,
        "window_end": end,
        "count": 1,
        "baseline": 0.0,
        "sample": [sample],
    }


def _burst_alert(burst: Burst, template: Template, label: str) -> dict[str, Any]:
    return {
        "id": f"burst:{burst.service}:{burst.template_id}:{burst.window_start_ms}",
        "kind": "burst",
        "service": burst.service,
        "template_id": burst.template_id,
        "template": template.text,
        "severity": burst.severity,
        "incident_class": label,
        "window_start": format_time_ms(burst.window_start_ms),
        "window_end": format_time_ms(burst.window_end_ms),
        "count": burst.count,
        "baseline": round(burst.baseline, 3),
        "sample": list(burst.samples),
    }


def _context(
    rec: LogRecord,
    template: Template,
    count: int,
    baseline: float,
    burst: Burst | None,
    sample: list[str],
    window_ms: int,
) -> dict[str, Any]:
    if burst is not None:
        start, end = format_time_ms(burst.window_start_ms), format_time_ms(burst.window_end_ms)
    else:
        start, end = _window(rec.time_ms, window_ms)
    return {
        "service": rec.service,
        "severity": rec.severity,
        "template_id": template.id,
        "template": template.text,
        "window_start": start,
        "window_end": end,
        "count": count,
        "baseline": round(baseline, 3),
        "sample": sample,
    }


def _escalate(
    out: dict[str, dict[str, Any]],
    line: _Line,
    reason: Reason,
    context: dict[str, Any],
    label: str,
    confidence: float,
    model: ModelInfo,
    now: str | None,
    cfg: LogTriageConfig,
) -> None:
    rec = line.record
    existing = out.get(rec.id)
    if existing is not None:  # one record, several reasons: one escalation
        existing["reasons"].append(reason.to_dict())
        existing["context"]["sample"] = (existing["context"]["sample"] + context["sample"])[: cfg.sample_size]
        existing["context"]["count"] = max(existing["context"]["count"], context["count"])
        return
    context["sample"] = context["sample"][: cfg.sample_size]
    out[rec.id] = {
        "id": rec.id,
        "kind": "log",
        "source": rec.source.to_dict(),
        "reasons": [reason.to_dict()],
        "redacted_text": line.redacted,
        "candidates": [{"label": label, "confidence": min(max(confidence, 0.0), 1.0)}],
        "labels": {
            "service": rec.service,
            "severity": rec.severity,
            "template_id": line.template.id,
            "incident_class": label,
        },
        "pii_counts": dict(line.pii),
        "context": context,
        "model": model.to_dict(),
        "escalated_at": now or rec.timestamp or format_time_ms(0),
    }
