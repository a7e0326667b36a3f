"""``streamer dlq resend``: put chosen dead letters back on a topic once their cause is fixed.

A dead letter says where its input was read (``source``: topic, partition, offset). What is resent is that
input record as it was: its value, key and headers, read again from its source offset, so every kind of
dead letter can go back, including those whose ``raw`` is not the input (an invalid answer keeps the
model's text; a refused escalation keeps a redacted copy). Where the source offset is gone (retention), the
dead letter's own ``raw`` is used when it is the whole input; otherwise the record is skipped and counted.

Reading joins no consumer group and commits nothing. Resending twice sends twice: the outputs of a
resent record carry the new offset, so a consumer that drops duplicates by ``(id, source)`` keeps both;
``--dry-run`` shows what would be sent first.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.errors import ConfigError
from streamer.kafka import clients
from streamer.settings import Settings
from streamer.topics import DEADLETTER

#: Codes whose ``raw`` is not the input record (the model's answer; a redacted copy): never resent from it.
RAW_IS_NOT_THE_INPUT = frozenset({"invalid_answer", "unredacted_pii"})
#: Header on every resent record: the dead letter it came from (``topic/partition/offset``).
RESENT_HEADER = "streamer-resent-from"


@dataclass(frozen=True, slots=True)
class Chosen:
    """One dead letter picked for resending, and where it sits in the dead-letter topic."""

    dead: tuple[str, int, int]
    code: str
    doc: Mapping[str, Any]

    @property
    def source(self) -> tuple[str, int, int] | None:
        source = self.doc.get("source")
        if not isinstance(source, Mapping):
            return None
        topic, partition, offset = source.get("topic"), source.get("partition"), source.get("offset")
        if isinstance(topic, str) and topic and isinstance(partition, int) and isinstance(offset, int):
            return topic, partition, offset
        return None


@dataclass(frozen=True, slots=True)
class Record:
    """What is sent: value, key and headers."""

    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class ResendReport:
    """What a resend did (or, with ``dry_run``, would do)."""

    scanned: int = 0
    chosen: int = 0
    resent: int = 0
    from_source: int = 0
    from_raw: int = 0
    dry_run: bool = False
    by_code: Counter[str] = field(default_factory=Counter)
    to_topics: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


def chosen(doc: Any, codes: Collection[str], source_topics: Collection[str]) -> bool:
    """Whether a dead letter matches the codes (and, if any are given, the source topics) asked for."""
    if not isinstance(doc, Mapping):
        return False
    error, source = doc.get("error"), doc.get("source")
    code = error.get("code") if isinstance(error, Mapping) else None
    if code not in codes:
        return False
    topic = source.get("topic") if isinstance(source, Mapping) else None
    return not source_topics or topic in source_topics


def record_from_raw(doc: Mapping[str, Any]) -> Record | str:
    """The input record as the dead letter kept it, or why that copy cannot stand for it."""
    code = doc.get("error", {}).get("code")
    raw = doc.get("raw")
    if code in RAW_IS_NOT_THE_INPUT:
        return f"source offset gone and the dead letter of {code} does not keep the input"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("value"), str):
        return "source offset gone and no raw value"
    if raw.get("cut"):
        return "source offset gone and the raw value was cut at 64 KiB"
    if raw.get("key_cut"):
        return "source offset gone and the raw key was cut at 4 KiB"
    text = raw["value"]
    if raw.get("size") == 0 and not text:
        return "source offset gone and the input was a tombstone"
    try:
        value = base64.b64decode(text, validate=True) if raw.get("encoding") == "base64" else text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):  # not written by this tool: someone's hand-made or damaged copy
        return "source offset gone and the raw value is not valid base64 or UTF-8"
    key = raw.get("key")
    return Record(value=value, key=key.encode("utf-8") if isinstance(key, str) else None)


async def _read_to_end(
    consumer: AIOKafkaConsumer, parts: Sequence[TopicPartition], timeout_s: float
) -> dict[TopicPartition, list[Any]]:
    """Every record of ``parts`` from their current positions up to the end offsets read now."""
    ends = await consumer.end_offsets(list(parts))
    out: dict[TopicPartition, list[Any]] = {tp: [] for tp in parts}
    deadline = time.monotonic() + timeout_s
    while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
        if time.monotonic() > deadline:
            raise ConfigError(f"reading {', '.join(sorted({tp.topic for tp in parts}))} took over {timeout_s:g} s")
        for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
            out[tp].extend(m for m in messages if m.offset < ends[tp])
    return out


async def _dead_letters(
    consumer: AIOKafkaConsumer, topic: str, codes: Collection[str], source_topics: Collection[str], timeout_s: float
) -> tuple[int, list[Chosen]]:
    parts = await clients.topic_partitions(consumer, topic)
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    scanned, picked = 0, []
    for tp, messages in (await _read_to_end(consumer, parts, timeout_s)).items():
        for message in messages:
            scanned += 1
            try:
                doc = orjson.loads(message.value) if message.value is not None else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and chosen(doc, codes, source_topics):
                picked.append(Chosen((tp.topic, tp.partition, message.offset), doc["error"]["code"], doc))
    return scanned, picked


async def _originals(
    consumer: AIOKafkaConsumer, wanted: Collection[tuple[str, int, int]], timeout_s: float
) -> dict[tuple[str, int, int], Record]:
    """The records at the given (topic, partition, offset)s that the brokers still hold."""
    by_tp: dict[TopicPartition, set[int]] = {}
    for topic, partition, offset in wanted:
        by_tp.setdefault(TopicPartition(topic, partition), set()).add(offset)
    existing: set[TopicPartition] = set()
    for topic in sorted({tp.topic for tp in by_tp}):  # all before any assignment (see resend_dead_letters)
        try:
            existing.update(await clients.topic_partitions(consumer, topic))
        except ConfigError:
            continue  # the source topic itself is gone
    parts = [tp for tp in by_tp if tp in existing]
    found: dict[tuple[str, int, int], Record] = {}
    if not parts:
        return found
    consumer.assign(parts)
    firsts = await consumer.beginning_offsets(parts)
    for tp in parts:
        consumer.seek(tp, max(min(by_tp[tp]), firsts[tp]))
    for tp, messages in (await _read_to_end(consumer, parts, timeout_s)).items():
        for m in messages:
            if m.offset in by_tp[tp]:
                headers = tuple((name, bytes(value)) for name, value in (m.headers or ()))
                found[(tp.topic, tp.partition, m.offset)] = Record(m.value, m.key, headers)
    return found


async def resend_dead_letters(
    settings: Settings,
    codes: Collection[str],
    *,
    source_topics: Collection[str] = (),
    to: str | None = None,
    dry_run: bool = False,
    timeout_s: float = 300.0,
) -> ResendReport:
    """Resend the input records of the dead letters with ``codes`` (from ``source_topics`` when given) to
    ``to`` (default: each one's source topic). Names are the cluster's (the topic prefix included)."""
    if not codes:
        raise ConfigError("choose the dead letters to resend with at least one --code")
    report = ResendReport(dry_run=dry_run)
    async with clients.reader(settings) as consumer:
        if to is not None:
            await clients.topic_partitions(consumer, to)  # a missing topic is an error now, not a send timeout
        report.scanned, picked = await _dead_letters(
            consumer, settings.topic(DEADLETTER), set(codes), set(source_topics), timeout_s
        )
    sources = {c.source for c in picked if c.source is not None}
    originals: dict[tuple[str, int, int], Record] = {}
    if sources:
        # A consumer of its own: one with partitions assigned only learns the metadata of their topics.
        async with clients.reader(settings) as consumer:
            originals = await _originals(consumer, sources, timeout_s)
    report.chosen = len(picked)
    plan: list[tuple[str, Record]] = []
    for item in picked:
        source = item.source
        record: Record | str
        from_source = source is not None and source in originals
        record = originals[source] if source is not None and from_source else record_from_raw(item.doc)
        if isinstance(record, str):
            report.skipped[record] += 1
            continue
        target = to or (source[0] if source is not None else None)
        if target is None:
            report.skipped["no source topic and no --to"] += 1
            continue
        report.from_source += from_source
        report.from_raw += not from_source
        trace = ("/".join(map(str, item.dead))).encode()
        headers = (*(h for h in record.headers if h[0] != RESENT_HEADER), (RESENT_HEADER, trace))
        plan.append((target, Record(record.value, record.key, headers)))
        report.by_code[item.code] += 1
        report.to_topics[target] += 1
    if dry_run or not plan:
        return report
    producer = await clients.started(settings, clients.producer(settings))
    try:
        pending = [await producer.send(target, r.value, key=r.key, headers=list(r.headers)) for target, r in plan]
        for future in pending:
            await future
            report.resent += 1
    finally:
        await producer.stop()
    return report


def render(report: ResendReport) -> str:
    """The summary ``streamer dlq resend`` prints."""
    verb = "would resend" if report.dry_run else "resent"
    count = sum(report.to_topics.values()) if report.dry_run else report.resent
    lines = [
        f"{report.scanned} dead letters read, {report.chosen} chosen; {verb} {count} "
        f"({report.from_source} read again from their source offset, {report.from_raw} from the dead letter's "
        "raw copy)"
    ]
    for code, n in sorted(report.by_code.items()):
        lines.append(f"  code {code:<18} {n}")
    for topic, n in sorted(report.to_topics.items()):
        lines.append(f"  to   {topic:<18} {n}")
    for why, n in sorted(report.skipped.items()):
        lines.append(f"  skipped {n}: {why}")
    return "\n".join(lines) + "\n"


_EPILOG = """\
Each chosen dead letter's input record is read again from its source offset (value, key and headers)
and produced to --to, or back to the topic it came from; where retention removed it, the dead letter's
raw copy is used when it is the whole input. Run with --dry-run first: resending twice sends twice.

examples:
  streamer dlq resend --code processing_failed --dry-run
  streamer dlq resend --code invalid_answer --source-topic llm.escalations.v1
  streamer dlq resend --code oversize --to support.tickets.v1
"""


def add_dlq_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``dlq resend`` to a top-level parser's subparsers (its handler is ``args.handler``)."""
    dlq = subparsers.add_parser("dlq", help="work with the dead-letter topic")
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    resend = actions.add_parser(
        "resend",
        help="put chosen dead letters back on a topic once their cause is fixed",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resend.add_argument(
        "--code", action="append", required=True, metavar="CODE", help="error code to resend (repeatable)"
    )
    resend.add_argument(
        "--source-topic", action="append", default=[], metavar="TOPIC", help="only dead letters read from TOPIC"
    )
    resend.add_argument("--to", metavar="TOPIC", help="where to produce them (default: the topic each came from)")
    resend.add_argument("--dry-run", action="store_true", help="send nothing; print what would be sent")
    resend.set_defaults(handler=_resend_command)


def _resend_command(args: argparse.Namespace) -> int:
    import asyncio

    from streamer.settings import load_settings

    settings = load_settings()
    report = asyncio.run(
        resend_dead_letters(
            settings,
            args.code,
            source_topics=[settings.topic(t) for t in args.source_topic],
            to=settings.topic(args.to) if args.to else None,
            dry_run=args.dry_run,
        )
    )
    sys.stdout.write(render(report))
    return 0
