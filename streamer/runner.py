"""Commands that run things: ``worker``, ``produce``, and ``demo`` (``streamer.demo.run``, the job of ``make run``)."""

from __future__ import annotations

import argparse
import asyncio
import codecs
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from streamer.errors import ConfigError
from streamer.events import encode
from streamer.kafka import clients
from streamer.observability import configure_logging
from streamer.settings import Settings, load_settings
from streamer.topics import LOGS, TICKETS


def _worker(args: argparse.Namespace) -> int:
    from streamer.runtime import tune_garbage_collector
    from streamer.worker import PATHS, build_worker

    settings = load_settings()
    configure_logging(settings)
    only = set(args.only or PATHS)

    def stop_before_start(signum: int, frame: object) -> None:
        # Nothing consumed yet, nothing to commit: a clean exit. The running worker's own handlers
        # (installed when its event loop starts) replace this one.
        import structlog

        structlog.get_logger(__name__).info("shutdown requested before the worker started", signal=signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_before_start)
    from streamer.metrics import listening_socket

    metrics_socket = listening_socket(settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
    # A file that cannot work is named before the broker is asked: the privacy policy is checked first.
    from streamer.privacy import load_policy
    from streamer.topics import load_catalog

    load_policy(settings.topics_file, load_catalog(settings.topics_file).topics)
    # Both paths' clients (Faust's and the log consumer's) would log an unreachable broker with a
    # traceback and exit 1; one check first turns it into the one-line error and exit 2 of every command.
    asyncio.run(clients.check_connection(settings))
    worker = build_worker(settings, only=only, metrics_socket=metrics_socket)
    tune_garbage_collector()
    worker.execute_from_commandline()
    return 0


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Tickets from a JSON Lines file; a line that is not an object is an error naming the line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)  # some Windows editors write one
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object")
            yield doc


async def produce_records(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    position: int | None = None,
) -> int:
    """Send keyed raw records, optionally paced to ``rate`` per second; returns how many were sent."""
    from tqdm import tqdm

    producer = await clients.started(settings, clients.producer(settings, linger_ms=20))
    sent = 0
    started = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    bar = tqdm(total=total, unit="rec", disable=not progress, file=sys.stderr, desc=f"-> {topic}", position=position)
    try:
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            bar.update()
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate:
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        bar.close()
        await producer.stop()
    return sent


def _ticket_records(docs: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes | None, bytes]]:
    for doc in docs:
        key = str(doc.get("id")).encode() if doc.get("id") is not None else None
        yield key, encode(doc)


def read_log_lines(path: Path) -> Iterator[dict[str, Any] | str | bytes]:
    """Entries of a log file: JSON objects (and JSON strings) parsed, any other line its bytes as read."""
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if line.lstrip()[:1] in (b"{", b'"'):
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    doc = None
                if isinstance(doc, dict | str):
                    yield doc
                    continue
            yield line


def log_records(entries: Iterable[dict[str, Any] | str | bytes]) -> Iterator[tuple[bytes | None, bytes]]:
    """Log entries as records: objects re-encoded, text as UTF-8, bytes as they are; keyed by service when known.

    The service is what the worker's decoder finds (a JSON field, a text layout's program or ``[service]``).
    """
    from streamer.events import RawEvent, Source
    from streamer.logs.decode import LogRecord, decode_log

    nowhere = Source("", 0, 0)
    for entry in entries:
        value = encode(entry) if isinstance(entry, dict) else entry.encode() if isinstance(entry, str) else entry
        decoded = decode_log(RawEvent(value, nowhere))
        service = decoded.service if isinstance(decoded, LogRecord) else "unknown"
        yield (service.encode() if service != "unknown" else None), value


def _produce(args: argparse.Namespace) -> int:
    from streamer import demo

    settings = load_settings()
    if args.kind == "tickets":
        topic = settings.topic(TICKETS)
        docs: Iterable[dict[str, Any]] = (
            read_jsonl(Path(args.file)) if args.file else demo.demo_tickets(args.demo, seed=args.seed)
        )
        records = _ticket_records(docs)
        total = args.demo if not args.file else None
    else:
        topic = settings.topic(LOGS)
        entries: Iterable[dict[str, Any] | str | bytes] = (
            read_log_lines(Path(args.file)) if args.file else demo.demo_log_lines(args.demo, seed=args.seed)
        )
        records = log_records(entries)
        total = args.demo if not args.file else None
    sent = asyncio.run(produce_records(settings, topic, records, rate=args.rate, total=total))
    print(f"sent {sent} records to {topic} on {settings.kafka_bootstrap}")
    return 0


def add_runtime_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run a triage worker until SIGTERM",
        description="Consume support.tickets.v1, triage every ticket and produce the results (settings: env).",
    )
    worker.add_argument("--only", nargs="+", choices=["tickets", "logs"], help="paths to run (default: both)")
    worker.set_defaults(handler=_worker)

    produce = commands.add_parser("produce", help="send tickets or log lines from a file or generated demo traffic")
    produce.add_argument("kind", choices=["tickets", "logs"], help="what to send: tickets or log lines")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--file", help="tickets: JSON Lines, one ticket per line; logs: JSON objects or plain text, one per line"
    )
    source.add_argument("--demo", type=int, metavar="N", help="send N generated demo tickets or log lines")
    produce.add_argument("--rate", type=float, help="records per second (default: as fast as possible)")
    produce.add_argument("--seed", type=int, default=7, help="seed of the demo generator")
    produce.set_defaults(handler=_produce)

    # Imported here, not at the top: streamer.demo.run sends its traffic with this module's senders.
    from streamer.demo.run import add_demo_command

    add_demo_command(commands)
