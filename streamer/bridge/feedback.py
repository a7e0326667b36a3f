"""Escalations joined with the large model's answers, as training data for the small models.

The tickets the small model escalated are the ones it finds hard; the large model's answers label
exactly those. Exported as ``{"text", "label", "source"}`` JSON Lines, they are one more ``--head
intent=FILE`` for ``streamer models build``, and the next bundle escalates less.

The text is what the small model reads (subject, a newline, then the body, as the worker builds it),
redacted: the export never holds more personal data than the escalation did. Answers of ``other`` are
skipped (the large model saw no known label), as are log escalations (their labels belong to another head).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import structlog

from streamer.bridge.prompt import OTHER
from streamer.errors import ConfigError
from streamer.kafka import clients
from streamer.settings import Settings
from streamer.topics import ESCALATIONS, LLM_RESPONSES
from streamer.triage.pii import redact

log = structlog.get_logger(__name__)

FEEDBACK_SOURCE = "large-model"
#: How long before ``--since`` escalations are read, for answers that came after the escalation.
ESCALATION_LOOKBACK = timedelta(days=1)


@dataclass
class ExportReport:
    """What the export read and wrote; ``skipped`` counts answers left out, by reason."""

    escalations: int = 0
    responses: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def training_text(escalation: Mapping[str, Any]) -> str:
    """The redacted text in the shape the model reads it (``subject\\nbody``, as ``ticket_text`` builds it)."""
    subject = str(escalation.get("redacted_subject") or "").strip()
    body = str(escalation.get("redacted_text") or "").strip()
    text = f"{subject}\n{body}" if subject else body
    return redact(text).text  # a no-op on redacted text; a guard for anything that slipped through


def join_feedback(
    escalations: Iterable[Mapping[str, Any]],
    responses: Iterable[Mapping[str, Any]],
    report: ExportReport | None = None,
) -> list[dict[str, str]]:
    """Training examples from escalations and answers joined by id; one per id (the last answer wins).

    At-least-once delivery duplicates records on both topics, so both sides are deduplicated by id.
    """
    report = report if report is not None else ExportReport()
    kinds: dict[str, str] = {}
    texts: dict[str, str] = {}
    for esc in escalations:
        report.escalations += 1
        record_id = str(esc["id"])
        kinds[record_id] = str(esc.get("kind", "ticket"))
        texts[record_id] = training_text(esc)
    labels: dict[str, str] = {}
    for resp in responses:
        report.responses += 1
        labels[str(resp["id"])] = str(resp["intent"])
    examples: list[dict[str, str]] = []
    for record_id, label in labels.items():
        if record_id not in kinds:
            report.skip("no_escalation")
        elif kinds[record_id] != "ticket":
            report.skip("not_a_ticket")
        elif label == OTHER:
            report.skip("other")
        elif not texts[record_id]:
            report.skip("empty_text")
        else:
            examples.append({"text": texts[record_id], "label": label, "source": FEEDBACK_SOURCE})
    report.written = len(examples)
    return examples


def write_jsonl(examples: Iterable[Mapping[str, Any]], out: Path) -> int:
    """Write ``examples`` to ``out`` (via a temporary file, so a failed export leaves no half file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    count = 0
    with tmp.open("wb") as fh:
        for example in examples:
            fh.write(orjson.dumps(example) + b"\n")
            count += 1
    tmp.replace(out)
    return count


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO-8601 date or date-time (UTC unless it says otherwise), or an age like ``24h``, ``7d``."""
    now = now or datetime.now(timezone.utc)
    relative = _RELATIVE.match(value)
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since {value!r}: expected an ISO-8601 time (2026-11-28T09:00Z) or an age (24h, 7d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


async def read_topic_since(settings: Settings, topic: str, since: datetime) -> list[dict[str, Any]]:
    """Every JSON record of ``topic`` written at or after ``since`` and before the export started.

    Offsets come from ``offsets_for_times``; the end is the end offsets taken first, so a busy topic does
    not keep the export reading forever. Records that are not JSON objects are skipped (and counted in
    the log), they are the dead-letter topic's business.
    """
    records: list[dict[str, Any]] = []
    bad = 0
    async with clients.reader(settings) as consumer:
        partitions = await clients.topic_partitions(consumer, topic)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
        todo = {tp: ends[tp] for tp in partitions if starts.get(tp) is not None and starts[tp].offset < ends[tp]}
        if not todo:
            return records
        consumer.assign(list(todo))
        for tp in todo:
            found = starts[tp]
            assert found is not None
            consumer.seek(tp, found.offset)
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= todo.get(tp, -1):
                        continue
                    try:
                        doc = orjson.loads(message.value) if message.value is not None else None
                    except orjson.JSONDecodeError:
                        doc = None
                    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                        records.append(doc)
                    else:
                        bad += 1
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    if bad:
        log.warning("skipped records that are not JSON objects with an id", topic=topic, count=bad)
    return records


async def export_feedback(settings: Settings, since: datetime, out: Path) -> ExportReport:
    """Join the answers written since ``since`` with their escalations; write the training examples to ``out``.

    Escalations are read from ``ESCALATION_LOOKBACK`` earlier, so an answer given after ``since`` to an
    escalation made just before it is not lost to the window.
    """
    escalations = await read_topic_since(settings, settings.topic(ESCALATIONS), since - ESCALATION_LOOKBACK)
    responses = await read_topic_since(settings, settings.topic(LLM_RESPONSES), since)
    report = ExportReport()
    examples = join_feedback(escalations, responses, report)
    write_jsonl(examples, out)
    return report
