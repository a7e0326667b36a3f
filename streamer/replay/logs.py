"""Replay a range of ``ops.logs.v1`` through a fresh log triage and compare with what was live.

The same safety as the ticket replay (``streamer.replay.run``): a consumer without a group, offsets fixed
before reading, output only to a per-run topic (``ops.logs.v1.replay.<run-id>``, following the privacy
policy of ``ops.logs.enriched.v1``). The processor is the worker's own ``LogProcessor`` with a new
``LogTriageState``, the given bundle and the checkout's ``routes.yaml``; this module loads no Faust.

Why "same bundle, 0 changes" holds, and where it stops holding. Log triage has state: templates mined so
far, their classes, burst baselines and the templates already alerted on. A line's template, its first
error alert and its burst depend on the lines before it. So, by default, the replay first runs each
partition's earlier records (from its first retained offset to the start of the range) through the
fresh state without comparing or writing them (the *warm-up*), then the range itself. Logs are keyed by
service, so a service's lines are in one partition and in order on both sides. Batches differ from the
live worker's (and live records leave one batch later, ``STREAMER_LOG_HOLD_BATCH``), so a template id
may have been generalised on one side and not yet on the other; both sides are therefore *settled*
before comparing: each record's template id is resolved through the replay's miner to the template as of
the end of the range (the live side takes that template's class from what the live worker published on
``ops.log_templates.v1``). With the same bundle, rules and lines, the decisions then agree.

What it cannot rebuild: state older than the topic's retention (the live worker also loaded templates
published before it), lines of partitions not replayed (``--partitions``; a template shared by services on
two partitions may be first seen in another order) and burst baselines counted by another worker. Those
show as changes; ``--no-warmup`` replays from a clean state, which is what a freshly started worker sees.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.errors import ConfigError
from streamer.kafka import clients
from streamer.logs.triage import LogTriageConfig
from streamer.pipeline.logs import LogProcessor
from streamer.replay.logdiff import LogDecision, LogDiffBuilder, log_decision_of
from streamer.replay.ranges import format_ms
from streamer.replay.report import ReplayReport
from streamer.replay.run import (
    LIVE_GRACE_MS,
    ReplayRequest,
    _sha256,
    add_live,
    bundle_info,
    check_run_id,
    drive,
    offsets_at,
    output_spec,
    plan,
    read_live,
)
from streamer.runtime import load_log_runtime
from streamer.settings import Settings
from streamer.topics import LOG_TEMPLATES, LOGS, LOGS_ENRICHED

__all__ = ["LogReplayRuntime", "load_log_replay_runtime", "run_log_replay"]


@dataclass
class LogReplayRuntime:
    """A fresh log processor (new state, no held records) and the bundle it runs."""

    processor: LogProcessor
    bundle: Any


def load_log_replay_runtime(
    settings: Settings, bundle: Any | None = None, *, config: LogTriageConfig | None = None
) -> LogReplayRuntime:
    """The worker's log processor on a new ``LogTriageState`` (of ``config``, default the worker's), with the
    bundle, rules and privacy policy of ``settings`` (everything checked as at a worker's start-up)."""
    runtime = load_log_runtime(settings, bundle, config=config)
    model = runtime.model_info
    processor = LogProcessor(
        runtime.state,
        runtime.classifier,
        model,
        runtime.limits,
        contracts=runtime.contracts,
        privacy=runtime.privacy,
        layouts=runtime.layouts,
        router=runtime.router,
        hold=False,  # both sides are settled at the end instead
    )
    return LogReplayRuntime(processor=processor, bundle=runtime.bundle)


def log_replay_settings(settings: Settings, runtime: LogReplayRuntime, batch_size: int) -> dict[str, Any]:
    """The settings that shape log decisions (triage config, limits, layouts, rules) and how the model ran."""
    processor = runtime.processor
    return {
        "log_triage": asdict(processor.state.config),
        "max_event_bytes": processor.limits.max_event_bytes,
        "max_text_chars": processor.limits.max_text_chars,
        "log_layouts": sorted(processor.layouts),
        "routes_file": str(settings.routes_file),
        "routes_sha256": _sha256(settings.routes_file),
        "topics_sha256": _sha256(settings.topics_file),
        "batch_size": batch_size,
        "device": settings.device,
        "compute_type": settings.compute_type,
        "topic_prefix": settings.topic_prefix,
        "kafka_bootstrap": settings.kafka_bootstrap,
    }


def _template_class(table: dict[str, str], value: bytes | None) -> None:
    """Keep the latest class the live worker published per template id."""
    if not value:
        return
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if isinstance(doc, dict) and isinstance(doc.get("template_id"), str):
        cls = doc.get("incident_class")
        if isinstance(cls, str) and not doc.get("superseded_by"):
            table[doc["template_id"]] = cls


async def run_log_replay(settings: Settings, runtime: LogReplayRuntime, request: ReplayRequest) -> ReplayReport:
    """Plan, read the live records, warm up, replay the range through ``runtime.processor``, write, report."""
    from streamer.kafka.admin import apply_topics

    if request.topic != LOGS:
        raise ConfigError(f"--topic {request.topic}: the log replay reads {LOGS}")
    check_run_id(request.run_id)
    spec = output_spec(settings, request)
    input_topic = settings.topic(request.topic)
    report = ReplayReport(
        run_id=request.run_id,
        topic=input_topic,
        output_topic=None if request.dry_run else settings.topic(spec.name),
        live_topic=settings.topic(request.live_topic) if request.live_topic else None,
        window=request.window,
        ranges=[],
        bundle=bundle_info(runtime.bundle),
        settings=log_replay_settings(settings, runtime, request.batch_size),
        started_at=format_ms(int(time.time() * 1000)) or "",
    )
    builder = LogDiffBuilder(max_examples=request.max_examples)
    live_classes: dict[str, str] = {}
    consumer = await clients.started(settings, clients.consumer(settings, group_id=None, auto_offset_reset="earliest"))
    try:
        report.ranges, report.notes = await plan(consumer, input_topic, request.window, request.partitions)
        if request.live_topic:
            since = request.window.from_ms - LIVE_GRACE_MS if request.window.from_ms is not None else None
            wanted = {r.partition: r for r in report.ranges if r.count}
            began = time.perf_counter()
            try:
                report.live_records_read = await read_live(
                    settings,
                    settings.topic(request.live_topic),
                    report.ranges,
                    partial(add_live, builder.add_live, input_topic=input_topic, wanted=wanted, decide=log_decision_of),
                    since_ms=since,
                    progress=request.progress,
                )
                await read_live(
                    settings,
                    settings.topic(LOG_TEMPLATES),
                    report.ranges,
                    partial(_template_class, live_classes),
                    since_ms=None,
                    progress=False,
                )
            except ConfigError as exc:
                report.notes.append(f"no comparison with live records: {exc}")
                report.live_topic = None
            report.live_seconds = time.perf_counter() - began
        if report.output_topic is not None:
            applied = await apply_topics(settings, [spec])
            if report.output_topic not in applied.created:
                if not request.output:
                    raise ConfigError(f"replay topic {report.output_topic} exists already; choose another --run-id")
                report.notes.append(f"writing to the existing topic {report.output_topic}")
        await drive(
            settings,
            runtime.processor,
            request,
            report,
            consumer,
            enriched_topic=LOGS_ENRICHED,
            add_replay=lambda value: builder.add_replay(log_decision_of(value, keep_message=True)),
            first=await _warmup_starts(consumer, input_topic, report, request),
            unit="line",
        )
    finally:
        await consumer.stop()
    if report.live_topic is not None:
        state = runtime.processor.state

        def settle(decision: LogDecision, classes: Mapping[str, str]) -> LogDecision:
            template = state.miner.resolve(decision.template_id)
            if template is None or template.id == decision.template_id:
                return decision
            cls = classes.get(template.id, decision.incident_class)
            return replace(decision, template_id=template.id, template=template.text, incident_class=cls)

        replayed = {tid: cls for tid, (cls, _) in state.classes.items()}
        report.diff = builder.report(partial(settle, classes=live_classes), partial(settle, classes=replayed))
    if request.partitions is not None and request.warmup:
        report.notes.append("warm-up covers the replayed partitions only; the live worker also saw the others")
    report.finished_at = format_ms(int(time.time() * 1000)) or ""
    return report


async def _warmup_starts(
    consumer: AIOKafkaConsumer, topic: str, report: ReplayReport, request: ReplayRequest
) -> dict[int, int]:
    """The first offset of each partition's warm-up (none with ``--no-warmup``): its first retained record,
    or with ``warmup_from_ms`` the first record at or after that time (never past the range's start). A week
    of retained lines is a long warm-up; what it leaves out (older templates, baselines) can show as changes,
    and a note says so."""
    if not request.warmup:
        return {}  # every partition from its range's start
    starts = {r.partition: r.beginning for r in report.ranges}
    if request.warmup_from_ms is None:
        return starts
    found = await offsets_at(consumer, [TopicPartition(topic, p) for p in starts], request.warmup_from_ms)
    for r in report.ranges:
        at = found.get(r.partition)
        starts[r.partition] = min(max(at if at is not None else r.start, r.beginning), r.start)
    report.notes.append(
        f"warm-up from {format_ms(request.warmup_from_ms)}: templates and baselines of earlier lines are not "
        "rebuilt and may show as changes"
    )
    return starts


#: Lines per batch when ``--batch`` is not given: the worker's own batch size.
DEFAULT_BATCH = Settings.model_fields["log_max_batch"].default
