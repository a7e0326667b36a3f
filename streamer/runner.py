"""Commands that run things: ``worker``, ``produce``, ``demo`` (the end-to-end job of ``make run``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from streamer.errors import ConfigError
from streamer.events import encode
from streamer.kafka import clients
from streamer.observability import configure_logging
from streamer.settings import Settings, load_settings
from streamer.topics import DEADLETTER, ESCALATIONS, LOGS, TICKETS, TICKETS_ENRICHED


def _worker(args: argparse.Namespace) -> int:
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
    worker.execute_from_commandline()
    return 0


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Tickets from a JSON Lines file; a line that is not an object is an error naming the line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
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
) -> int:
    """Send keyed raw records, optionally paced to ``rate`` per second; returns how many were sent."""
    from tqdm import tqdm

    producer = clients.producer(settings, linger_ms=20)
    try:
        await producer.start()
    except Exception as exc:
        await producer.stop()
        raise clients.unavailable(settings, exc) from None
    sent = 0
    started = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    bar = tqdm(total=total, unit="rec", disable=not progress, file=sys.stderr, desc=f"-> {topic}")
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


async def _tail(settings: Settings, topics: list[str], start: dict[Any, int]) -> AsyncIterator[tuple[str, Any]]:
    """Records of ``topics`` from the given offsets, forever (the caller stops iterating)."""
    from aiokafka import TopicPartition

    consumer = clients.consumer(settings, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                yield "", None
            for tp, messages in batches.items():
                assert isinstance(tp, TopicPartition)
                for message in messages:
                    yield tp.topic, orjson.loads(message.value)
    finally:
        await consumer.stop()


async def _end_offsets(settings: Settings, topics: list[str]) -> dict[Any, int]:
    consumer = clients.consumer(settings, group_id=None)
    await consumer.start()
    try:
        partitions = [tp for topic in topics for tp in await clients.topic_partitions(consumer, topic)]
        ends: dict[Any, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


def _demo(args: argparse.Namespace) -> int:
    """Topics, bundle, worker, traffic, summary: the whole main job on one machine."""
    from streamer import demo
    from streamer.defaults import ensure_default_bundle
    from streamer.kafka.admin import apply_topics
    from streamer.topics import load_catalog

    settings = load_settings()
    configure_logging(settings)
    catalog = load_catalog(settings.topics_file)
    report = asyncio.run(apply_topics(settings, catalog.topics.values()))
    print(f"topics: {len(report.created)} created, {len(report.unchanged)} unchanged, {len(report.drift)} drift(s)")
    bundle_dir = ensure_default_bundle(settings)
    print(f"bundle: {bundle_dir}")

    watched = [settings.topic(t) for t in (TICKETS_ENRICHED, ESCALATIONS, DEADLETTER)]
    start = asyncio.run(_end_offsets(settings, watched))
    env = {**os.environ, "STREAMER_BUNDLE_DIR": str(bundle_dir)}
    worker = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env)
    try:
        waited = _wait_until_ready(settings, worker, args.timeout)
        if waited is not None:
            print(f"worker ready in {waited:.1f} s")
        run_tag = f"{int(time.time()) % 100000:05d}"
        tickets = list(demo.demo_tickets(args.tickets, seed=args.seed))
        records: list[tuple[bytes | None, bytes]] = []
        expected = set()
        malformed = 0
        for i, doc in enumerate(tickets):
            doc["id"] = f"{doc['id']}-{run_tag}"
            expected.add(doc["id"])
            records.append((doc["id"].encode(), encode(doc)))
            if args.malformed and i % args.malformed == args.malformed - 1:
                bad_id = f"BAD-{run_tag}-{i}"
                records.append((bad_id.encode(), b'{"id": "' + bad_id.encode() + b'", "body": 42'))
                malformed += 1
        began = time.perf_counter()
        asyncio.run(produce_records(settings, settings.topic(TICKETS), records, rate=args.rate, total=len(records)))
        summary = asyncio.run(_collect(settings, watched, start, expected, malformed, run_tag, args.timeout, worker))
        summary["elapsed_s"] = time.perf_counter() - began
        _print_summary(summary, len(expected))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=settings.shutdown_timeout_s + 10)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0 if summary["enriched"] == len(expected) else 1


async def _collect(
    settings: Settings,
    watched: list[str],
    start: dict[Any, int],
    expected: set[str],
    malformed: int,
    run_tag: str,
    timeout: float,
    worker: subprocess.Popen[bytes],
) -> dict[str, Any]:
    enriched: set[str] = set()
    summary: dict[str, Any] = {
        "intents": Counter(),
        "routes": Counter(),
        "reasons": Counter(),
        "escalated": 0,
        "dead": Counter(),
        "latency": [],
        "judged": 0,
        "agree": 0,
    }
    deadline = time.monotonic() + timeout
    async for topic, record in _tail(settings, watched, start):
        if record is not None and topic.endswith(TICKETS_ENRICHED) and record["id"] in expected:
            if record["id"] not in enriched:
                enriched.add(record["id"])
                triage = record["triage"]
                summary["intents"][triage["intent"]["label"]] += 1
                for route in triage["routes"]:
                    summary["routes"][route] += 1
                summary["escalated"] += bool(triage["escalation"]["escalate"])
                for reason in triage["escalation"]["reasons"]:
                    summary["reasons"][reason["code"]] += 1
                summary["latency"].append(record["latency_ms"])
                intended = (record["ticket"].get("metadata") or {}).get("expected", {}).get("intents") or []
                if intended:
                    summary["judged"] += 1
                    summary["agree"] += triage["intent"]["label"] in intended
        elif record is not None and topic.endswith(DEADLETTER) and run_tag in str(record["raw"].get("key")):
            summary["dead"][record["error"]["code"]] += 1
        done = len(enriched) >= len(expected) and sum(summary["dead"].values()) >= malformed
        if done or time.monotonic() > deadline or worker.poll() is not None:
            break
    summary["enriched"] = len(enriched)
    return summary


def _wait_until_ready(settings: Settings, worker: subprocess.Popen[bytes], timeout: float) -> float | None:
    """Seconds until the worker's ``/ready`` answers 200 (model loaded, partitions assigned), so the demo's
    latency measures triage, not start-up. ``None`` when the worker serves no HTTP (metrics port 0) or does
    not get ready in ``timeout`` s; the demo then sends anyway and the wait shows in its latency."""
    if not settings.metrics_port:
        return None
    url = f"http://127.0.0.1:{settings.metrics_port}/ready"
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if worker.poll() is not None:
            raise SystemExit(f"streamer: error: the worker exited with code {worker.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return time.perf_counter() - began
        except (OSError, ValueError):
            pass  # not listening yet, or 503 while joining the group
        time.sleep(0.2)
    return None


def _print_summary(s: dict[str, Any], sent: int) -> None:
    latencies = sorted(s["latency"]) or [0.0]
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print()
    print(
        f"tickets sent {sent}, enriched {s['enriched']}, in {s['elapsed_s']:.1f} s "
        f"({s['enriched'] / max(s['elapsed_s'], 1e-9):.1f} tickets/s end to end)"
    )
    print(f"latency (produce -> enriched) p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    if s["judged"]:
        print(
            f"intent agrees with the demo generator's intended label on {s['agree']}/{s['judged']} "
            f"({100 * s['agree'] / s['judged']:.1f}%)"
        )
    print(f"escalated to the large model: {s['escalated']} ({100 * s['escalated'] / max(s['enriched'], 1):.1f}%)")
    for code, n in s["reasons"].most_common():
        print(f"  {code:<22} {n}")
    print(f"dead letters: {sum(s['dead'].values())} " + " ".join(f"{k}={v}" for k, v in s["dead"].items()))
    print("intents:")
    for label, n in s["intents"].most_common():
        print(f"  {label:<24} {n}")
    print("routes:")
    for route, n in s["routes"].most_common():
        print(f"  {route:<32} {n}")


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

    demo = commands.add_parser(
        "demo",
        help="the main job end to end: topics, default bundle, worker, demo traffic, summary",
    )
    demo.add_argument("--tickets", type=int, default=300, help="demo tickets to send (default 300)")
    demo.add_argument("--rate", type=float, default=None, help="tickets per second (default: as fast as possible)")
    demo.add_argument("--malformed", type=int, default=50, help="add one malformed record every N (0: none)")
    demo.add_argument("--seed", type=int, default=11, help="seed of the demo tickets (default 11)")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up waiting after this many seconds")
    demo.set_defaults(handler=_demo)
