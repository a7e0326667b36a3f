"""``streamer triage tickets|logs --file F``: the worker's processing of a file, without Kafka.

Each line of the file is one input record, as a producer would send it; the records go through the same
processors as in the worker (decode, the pure core, the privacy policy, dead letters) in batches of the
worker's size, and every output is printed as one JSON line ``{"topic", "key", "value"}`` in the order the
worker would send it. Users check the policy and the model on their own samples; tests use it too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streamer.errors import ConfigError
from streamer.events import RawEvent, Source
from streamer.settings import Settings, load_settings
from streamer.topics import LOGS, TICKETS

if TYPE_CHECKING:
    from streamer.pipeline import Batch

__all__ = ["add_triage_commands", "log_file_outputs", "ticket_file_outputs"]


def _key(key: bytes | None) -> str | None:
    return key.decode("utf-8", errors="backslashreplace") if key is not None else None


def _lines(path: Path) -> Iterator[bytes]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


def _ticket_key(line: bytes) -> bytes | None:
    """The ticket id, as ``streamer produce tickets`` keys records; none when the line is not a ticket."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    ticket_id = doc.get("id") if isinstance(doc, dict) else None
    return str(ticket_id).encode() if ticket_id is not None else None


def _batches(records: Iterable[tuple[bytes | None, bytes]], topic: str, size: int) -> Iterator[list[RawEvent]]:
    batch: list[RawEvent] = []
    for offset, (key, value) in enumerate(records):
        batch.append(RawEvent(value=value, key=key, source=Source(topic, 0, offset)))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _with_bundle(settings: Settings, bundle: Path | None) -> Settings:
    return settings.model_copy(update={"bundle_dir": bundle}) if bundle is not None else settings


def ticket_file_outputs(settings: Settings, path: Path, *, bundle: Any = None) -> Iterator[dict[str, Any]]:
    """Every output of the tickets in ``path`` (JSON Lines), as the ticket worker would send them."""
    from streamer.runtime import load_ticket_runtime

    processor = load_ticket_runtime(settings, bundle).processor
    records = ((_ticket_key(line), line) for line in _lines(path))
    for raws in _batches(records, TICKETS, settings.max_batch):
        for out in processor(raws).outputs:
            yield {"topic": out.topic, "key": _key(out.key), "value": out.value}


def log_file_outputs(
    settings: Settings, path: Path, *, bundle: Any = None, service: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every output of the log lines in ``path`` (JSON objects or text), as the log worker would send them:
    the worker's processor (``STREAMER_LOG_LAYOUTS``, the batch hold), the held records released at the end.

    ``service`` keys every line with that name, as a shipper that sends one service's file would, so its
    ``STREAMER_LOG_LAYOUTS`` entry applies; without it each line is keyed by the service its decoder finds.
    """
    from streamer.runner import log_records, read_log_lines
    from streamer.runtime import load_log_runtime, log_processor

    processor = log_processor(settings, load_log_runtime(settings, bundle))

    def batches() -> Iterator[Batch]:
        records = log_records(read_log_lines(path))
        if service is not None:
            records = ((service.encode(), value) for _, value in records)
        for raws in _batches(records, LOGS, settings.log_max_batch):
            yield processor(raws)
        if processor.hold:
            yield processor.flush()

    for batch in batches():
        for out in batch.outputs:
            yield {"topic": out.topic, "key": _key(out.key), "value": orjson.loads(out.data)}


def _triage(args: argparse.Namespace) -> int:
    from streamer.observability import configure_logging

    settings = _with_bundle(load_settings(), Path(args.bundle) if args.bundle else None)
    configure_logging(settings)  # logs to stderr: stdout carries only the outputs
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    if args.kind == "tickets":
        if args.service is not None:
            raise ConfigError("--service keys log lines; tickets carry their own key")
        outputs = ticket_file_outputs(settings, path)
    else:
        outputs = log_file_outputs(settings, path, service=args.service)
    out = sys.stdout.buffer
    for record in outputs:
        out.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE))
    out.flush()
    return 0


def add_triage_commands(commands: Any) -> None:
    """``streamer triage tickets|logs --file F [--bundle DIR] [--service NAME]``."""
    triage = commands.add_parser(
        "triage",
        help="run the triage of a file without Kafka and print every output as a JSON line",
        description=(
            "Read tickets (JSON Lines) or log lines (JSON or text) from a file, run them through the worker's "
            "processing (the model, rules, privacy policy and dead letters) and print one JSON line per "
            'output, {"topic": .., "key": .., "value": {..}}, in the order the worker would send them.'
        ),
    )
    triage.add_argument("kind", choices=["tickets", "logs"], help="what the file holds: tickets or log lines")
    triage.add_argument("--file", required=True, metavar="F", help="input file, one record per line")
    triage.add_argument("--bundle", metavar="DIR", help="model bundle (default: STREAMER_BUNDLE_DIR)")
    triage.add_argument(
        "--service",
        metavar="NAME",
        help="logs only: key every line with this service, so its STREAMER_LOG_LAYOUTS entry applies",
    )
    triage.set_defaults(handler=_triage)
