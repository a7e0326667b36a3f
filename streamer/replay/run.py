"""Replay a window of the ticket topic through the worker's own processor and compare with live decisions.

Safe beside live workers: the replay reads with a consumer that has no group (``group_id=None``, manual
assignment), so it joins no group and commits nothing; the live group's offsets cannot move. It writes
only to a per-run topic (``<topic>.replay.<run-id>``, short retention, from ``topics.yaml``'s ``replay``
section) and refuses to write to any declared topic.

The offsets are fixed once, before reading: end offsets as they were at planning time, so the report's
ranges say exactly which records were replayed. Partitions are read one after the other, so a rerun over
the same ranges with the same bundle and batch size forms the same batches and writes the same decisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.errors import ConfigError, StreamerError
from streamer.events import RawEvent, Source
from streamer.kafka import clients
from streamer.pipeline import Batch
from streamer.pipeline.tickets import TicketProcessor
from streamer.replay.diff import DiffBuilder, decision_of, redacted_excerpt
from streamer.replay.ranges import PartitionRange, Window, format_ms, plan_ranges, select_partitions
from streamer.replay.report import ReplayReport
from streamer.runtime import TicketRuntime
from streamer.settings import Settings
from streamer.topics import TICKETS, TICKETS_ENRICHED, TopicSpec, load_catalog

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Header on every replayed record, so a stray one is never mistaken for a live decision.
RUN_HEADER = "streamer-replay-run"


def replay_headers(headers: Sequence[tuple[str, bytes]], run_id: str) -> tuple[tuple[str, bytes], ...]:
    """A replayed record's headers: the live contract's (type, schema, model, trace, subject), its ``ce_id``
    made the run's own (a replay is another event than the live decision it re-makes), and the run."""
    suffix = f":replay.{run_id}".encode()
    out = tuple((name, value + suffix if name == "ce_id" else value) for name, value in headers)
    return (*out, (RUN_HEADER, run_id.encode()))


#: Live decisions are looked up from this long before the window's start (producers' clocks drift).
LIVE_GRACE_MS = 3_600_000


def new_run_id(now: float | None = None) -> str:
    """``20261128T134502Z-3f9a1c``: sortable by time, unique enough to name a topic."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    """A run id becomes part of a topic name: letters, digits, ``-`` and ``_``, at most 64."""
    if not _RUN_ID.match(run_id):
        raise ConfigError(
            f"--run-id {run_id!r}: use letters, digits, '-' and '_' (at most 64, starting with a letter or digit)"
        )
    return run_id


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and where to write it; topic names are declared names (the prefix is added)."""

    window: Window
    run_id: str
    topic: str = TICKETS
    partitions: tuple[int, ...] | None = None
    output: str | None = None
    dry_run: bool = False
    live_topic: str | None = TICKETS_ENRICHED
    batch_size: int = 64
    max_examples: int = 5
    progress: bool = True
    #: Log replays: replay each partition's earlier records first to rebuild the state (not compared).
    warmup: bool = True
    #: ... from this time on only (epoch ms; ``None``: from the first retained record).
    warmup_from_ms: int | None = None


def bundle_info(bundle: Any) -> dict[str, Any]:
    """Name, version, place and the sha256 of every file of the bundle (and of its manifest)."""
    manifest: Mapping[str, Any] = bundle.manifest
    manifest_file = bundle.path / "manifest.json"
    manifest_sha = hashlib.sha256(manifest_file.read_bytes()).hexdigest() if manifest_file.is_file() else None
    source = manifest.get("source") or {}
    return {
        "name": bundle.name,
        "version": bundle.version,
        "path": str(bundle.path),
        "created": manifest.get("created"),
        "source": {"package": source.get("package"), "version": source.get("version")},
        "manifest_sha256": manifest_sha,
        "files": dict(manifest.get("files") or {}),
    }


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def replay_settings(settings: Settings, runtime: TicketRuntime, batch_size: int) -> dict[str, Any]:
    """The settings that shape decisions (thresholds, limits, rules) and how the model ran."""
    policy = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(runtime.processor.policy).items()}
    return {
        "escalation_policy": policy,
        "max_event_bytes": runtime.processor.limits.max_event_bytes,
        "max_text_chars": runtime.processor.limits.max_text_chars,
        "routes_file": str(settings.routes_file),
        "routes_sha256": _sha256(settings.routes_file),
        "topics_sha256": _sha256(settings.topics_file),
        "batch_size": batch_size,
        "device": settings.device,
        "compute_type": settings.compute_type,
        "intra_threads": settings.intra_threads,
        "topic_prefix": settings.topic_prefix,
        "kafka_bootstrap": settings.kafka_bootstrap,
    }


def output_spec(settings: Settings, request: ReplayRequest) -> TopicSpec:
    """The replay topic's definition; never a declared (live) topic."""
    catalog = load_catalog(settings.topics_file)
    spec = catalog.replay_topic(request.topic, request.run_id)
    if request.output:
        if request.output in catalog.topics:
            raise ConfigError(f"--output {request.output} is a live topic of topics.yaml; a replay never writes there")
        spec = replace(spec, name=request.output)
    return spec


async def offsets_at(consumer: AIOKafkaConsumer, tps: list[TopicPartition], ms: int) -> dict[int, int | None]:
    """Per partition, the first offset whose record is at or after ``ms`` (``None``: no such record)."""
    answer = await consumer.offsets_for_times(dict.fromkeys(tps, ms))
    return {tp.partition: (found.offset if found is not None else None) for tp, found in answer.items()}


async def plan(
    consumer: AIOKafkaConsumer, topic: str, window: Window, partitions: tuple[int, ...] | None
) -> tuple[list[PartitionRange], list[str]]:
    """Ranges of ``topic`` (the cluster's name) for ``window``: end offsets first, then the time lookups."""
    tps = await clients.topic_partitions(consumer, topic)
    chosen = set(select_partitions([tp.partition for tp in tps], partitions))
    tps = [tp for tp in tps if tp.partition in chosen]
    end = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    beginning = {tp.partition: off for tp, off in (await consumer.beginning_offsets(tps)).items()}
    from_lookup = await offsets_at(consumer, tps, window.from_ms) if window.from_ms is not None else None
    to_lookup = await offsets_at(consumer, tps, window.to_ms) if window.to_ms is not None else None
    return plan_ranges(window, beginning, end, from_lookup, to_lookup)


async def fetch(
    consumer: AIOKafkaConsumer,
    spans: Mapping[TopicPartition, tuple[int, int]],
    *,
    max_records: int,
    stall_s: float = 120.0,
) -> AsyncIterator[list[Any]]:
    """Records of each partition in ``[start, end)``, in chunks; returns once every partition is done.

    A partition is done when a record at or past its end arrived or the position passed the end (gaps
    left by transaction markers or deleted records). No progress for ``stall_s`` is an error.
    """
    active = {tp: end for tp, (start, end) in spans.items() if end > start}
    if not active:
        return
    consumer.assign(list(active))
    for tp in active:
        consumer.seek(tp, spans[tp][0])
    last_progress = time.monotonic()
    while active:
        batches = await consumer.getmany(*active, timeout_ms=500, max_records=max_records)
        chunk: list[Any] = []
        for tp, messages in batches.items():
            end = active.get(tp)
            if end is None:
                continue
            chunk.extend(m for m in messages if m.offset < end)
            if messages and messages[-1].offset >= end - 1:
                del active[tp]
        for tp in [tp for tp in active if tp not in batches]:
            if await consumer.position(tp) >= active[tp]:
                del active[tp]
        if batches:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            left = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in active)
            raise StreamerError(f"no records for {stall_s:.0f} s from {left}; is the broker reachable?")
        if chunk:
            yield chunk


async def read_live(
    settings: Settings,
    live_topic: str,
    ranges: list[PartitionRange],
    on_record: Callable[[bytes | None], None],
    *,
    since_ms: int | None,
    progress: bool,
) -> int:
    """Hand every value of the live topic to ``on_record`` (which keeps the decisions on inputs inside
    ``ranges``); returns how many records were read.

    The live topic is read from ``since_ms`` (its own timestamps: when decisions were produced) or from
    the beginning, to its end offsets now.
    """
    from tqdm import tqdm

    wanted = {r.partition: r for r in ranges if r.count}
    if not wanted:
        return 0
    consumer = await clients.started(settings, clients.consumer(settings, group_id=None, auto_offset_reset="earliest"))
    read = 0
    try:
        tps = await clients.topic_partitions(consumer, live_topic)
        end = await consumer.end_offsets(tps)
        start = await consumer.beginning_offsets(tps)
        if since_ms is not None:
            for tp, found in (await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))).items():
                start[tp] = found.offset if found is not None else end[tp]
        spans = {tp: (start[tp], end[tp]) for tp in tps}
        total = sum(max(0, e - s) for s, e in spans.values())
        with tqdm(total=total, unit="rec", desc="live decisions", file=sys.stderr, disable=not progress) as bar:
            async for chunk in fetch(consumer, spans, max_records=5000):
                read += len(chunk)
                bar.update(len(chunk))
                for message in chunk:
                    on_record(message.value)
    finally:
        await consumer.stop()
    return read


def add_live(
    add: Callable[[Any], None],
    value: bytes | None,
    *,
    input_topic: str,
    wanted: Mapping[int, PartitionRange],
    decide: Callable[[Mapping[str, Any]], Any] = decision_of,
) -> None:
    """``add(decide(record))`` for a live record made from an input inside ``wanted`` (partition -> range)."""
    if not value:
        return
    try:
        record = orjson.loads(value)
        source = record["source"]
        if source["topic"] != input_topic:
            return
        partition = wanted.get(source["partition"])
        if partition is None or source["offset"] not in partition:
            return
        add(decide(record))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return  # not an enriched record: nothing to compare with


def _excerpt(value: Mapping[str, Any]) -> str:
    return redacted_excerpt(value.get("ticket") or {})


async def run_replay(settings: Settings, runtime: TicketRuntime, request: ReplayRequest) -> ReplayReport:
    """Plan, read the live decisions, replay through ``runtime.processor``, write, and report."""
    from streamer.kafka.admin import apply_topics

    if request.topic != TICKETS:
        raise ConfigError(
            f"--topic {request.topic}: the ticket replay reads {TICKETS} (log lines: streamer.replay.logs)"
        )
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
        settings=replay_settings(settings, runtime, request.batch_size),
        started_at=format_ms(int(time.time() * 1000)) or "",
    )
    consumer = await clients.started(settings, clients.consumer(settings, group_id=None, auto_offset_reset="earliest"))
    try:
        report.ranges, report.notes = await plan(consumer, input_topic, request.window, request.partitions)
        builder = DiffBuilder(max_examples=request.max_examples)
        if request.live_topic:
            since = request.window.from_ms - LIVE_GRACE_MS if request.window.from_ms is not None else None
            began = time.perf_counter()
            try:
                wanted = {r.partition: r for r in report.ranges if r.count}
                report.live_records_read = await read_live(
                    settings,
                    settings.topic(request.live_topic),
                    report.ranges,
                    partial(add_live, builder.add_live, input_topic=input_topic, wanted=wanted),
                    since_ms=since,
                    progress=request.progress,
                )
            except ConfigError as exc:
                report.notes.append(f"no comparison with live decisions: {exc}")
                report.live_topic = None
            report.live_seconds = time.perf_counter() - began
        if report.output_topic is not None:
            applied = await apply_topics(settings, [spec])
            if report.output_topic not in applied.created:
                if not request.output:
                    raise ConfigError(f"replay topic {report.output_topic} exists already; choose another --run-id")
                report.notes.append(f"writing to the existing topic {report.output_topic}")
                report.notes.extend(f"drift: {d}" for d in applied.drift)
        processor = runtime.processor
        if report.live_topic is not None and processor.spender is not None:
            processor = _judged_as_live(processor, builder, report)
        await drive(
            settings,
            processor,
            request,
            report,
            consumer,
            enriched_topic=TICKETS_ENRICHED,
            add_replay=lambda value: builder.add_replay(decision_of(value), partial(_excerpt, value)),
            unit="ticket",
        )
    finally:
        await consumer.stop()
    if report.live_topic is not None:
        report.diff = builder.report()
    report.finished_at = format_ms(int(time.time() * 1000)) or ""
    return report


def _judged_as_live(processor: TicketProcessor, builder: DiffBuilder, report: ReplayReport) -> TicketProcessor:
    """``processor`` judging each ticket that the same bundle decided live at the threshold live used.

    The escalation threshold follows the traffic before each batch (``BudgetSpender``), and a replay's
    batches and history are not live's: judged by its own spender, tickets near the threshold would change
    with the very same bundle. A bundle that was not live judges by its own spender (its scores are its own).
    """
    spender = processor.spender
    assert spender is not None
    info = processor.model_info
    thresholds = builder.live_thresholds(f"{info.name}@{info.version}")
    window = f"the escalation threshold follows the last {spender.window} tickets (STREAMER_ESCALATE_SPEND_WINDOW)"
    if not thresholds:
        report.notes.append(
            f"{window}: the replay warms its own over the range, so escalations near the threshold may differ "
            "from live; STREAMER_ESCALATE_SPEND_WINDOW=0 judges at the calibrated threshold"
        )
        return processor
    report.notes.append(
        f"{window}: the {len(thresholds)} tickets this bundle decided live are judged at the threshold live "
        "used, the others at the replay's own"
    )
    return replace(processor, threshold_of=lambda source: thresholds.get((source.partition, source.offset)))


async def drive(
    settings: Settings,
    processor: Callable[[list[RawEvent]], Batch],
    request: ReplayRequest,
    report: ReplayReport,
    consumer: AIOKafkaConsumer,
    *,
    enriched_topic: str,
    add_replay: Callable[[Mapping[str, Any]], None],
    first: Mapping[int, int] | None = None,
    unit: str = "record",
) -> None:
    """The read → process → write loop of both replays; the processor runs in a thread while the loop
    fetches and sends.

    One partition after the other, in offset order: the batches, and so the model's numerics (int8 results
    move slightly with a batch's padding), are the same on every run over the same ranges. From
    ``first[partition]`` (default: the range's start) the records before the range are processed without
    being compared or written (the warm-up of log state); batches never straddle the range's start. Each
    enriched record of ``enriched_topic`` goes to ``add_replay`` and, unless a dry run, to the output topic.
    """
    from tqdm import tqdm

    loop = asyncio.get_running_loop()
    producer = None
    if report.output_topic is not None:
        producer = await clients.started(settings, clients.producer(settings))
    dead: Counter[str] = Counter()
    pending: list[asyncio.Future[Any]] = []
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-processor")
    bar = tqdm(total=report.planned, unit=unit, desc="replay", file=sys.stderr, disable=not request.progress)

    async def process(batch: list[RawEvent], compared: bool) -> None:
        nonlocal pending
        result = await loop.run_in_executor(executor, processor, batch)
        if not compared:
            report.warmup_records += len(batch)
            return
        if pending:  # the previous batch's acknowledgements, awaited while this one was processed
            await asyncio.gather(*pending)
            pending = []
        report.records += len(batch)
        report.processed += result.processed
        dead.update(result.dead_letters)
        for out in result.outputs:
            if out.topic != enriched_topic:
                continue
            add_replay(out.value)
            if producer is not None and report.output_topic is not None:
                headers = list(replay_headers(out.headers, request.run_id))
                pending.append(await producer.send(report.output_topic, out.data, key=out.key, headers=headers))
                report.written += 1
        bar.update(len(batch))

    began = time.perf_counter()
    try:
        for r in report.ranges:
            if not r.count:
                continue
            start = (first or {}).get(r.partition, r.start)
            span = {TopicPartition(report.topic, r.partition): (start, r.end)}
            buffer: list[RawEvent] = []
            warming = start < r.start
            async for chunk in fetch(consumer, span, max_records=max(request.batch_size, 500)):
                for message in chunk:
                    if warming and message.offset >= r.start:
                        if buffer:
                            await process(buffer, compared=False)
                        buffer, warming = [], False
                    stamp = message.timestamp if message.timestamp is not None and message.timestamp >= 0 else None
                    if not warming and not request.window.contains_time(stamp):
                        report.outside_window += 1
                    source = Source(message.topic, message.partition, message.offset, stamp)
                    headers_in = tuple(message.headers or ())  # the input's trace context, as live
                    buffer.append(RawEvent(value=message.value, key=message.key, source=source, headers=headers_in))
                while len(buffer) >= request.batch_size:
                    batch, buffer = buffer[: request.batch_size], buffer[request.batch_size :]
                    await process(batch, compared=not warming)
            if buffer:
                await process(buffer, compared=not warming)
        if pending:
            await asyncio.gather(*pending)
    finally:
        bar.close()
        executor.shutdown(wait=True)
        if producer is not None:
            await producer.stop()
    report.replay_seconds = time.perf_counter() - began
    report.dead_letters = dict(dead)
    if report.records < report.planned:
        report.notes.append(
            f"read {report.records} records where the ranges span {report.planned} offsets: the rest held no "
            "record (deleted by retention meanwhile, or transaction markers)"
        )
