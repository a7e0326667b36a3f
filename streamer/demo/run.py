"""``streamer demo``: the main job end to end on one machine, what ``make run`` runs.

Topics, the default bundle, the worker (and the bridge when a large model is configured), both paths'
demo traffic, a read-back of the output topics into ``report.DemoTally``, the summary, a replay report.
The terminal gets progress bars and the summary; every process's log lines go to files under
``var/demo/<run>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streamer.demo.logs import demo_log_story
from streamer.demo.tickets import demo_tickets
from streamer.events import encode
from streamer.kafka import clients
from streamer.observability import configure_logging
from streamer.runner import log_records, produce_records
from streamer.settings import Settings, load_settings
from streamer.topics import ESCALATIONS, LOGS, TICKETS

if TYPE_CHECKING:
    from streamer.demo.report import DemoTally

__all__ = ["add_demo_command", "run_demo", "wait_until_ready"]


async def _tail(settings: Settings, topics: list[str], start: dict[Any, int]) -> AsyncIterator[tuple[str, Any, int]]:
    """Records of ``topics`` from the given offsets with their timestamps, forever (the caller stops);
    ``("", None, 0)`` after each empty fetch, so the caller can check its deadlines."""
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
                yield "", None, 0
            for tp, messages in batches.items():
                assert isinstance(tp, TopicPartition)
                for message in messages:
                    if message.value is not None:
                        yield tp.topic, orjson.loads(message.value), message.timestamp
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


def run_demo(args: argparse.Namespace) -> int:
    """Topics, bundle, worker (and bridge), both paths' traffic, summary, replay: the main job on one machine.

    The terminal gets progress bars and the summary; every process's log lines go to files under
    ``var/demo/<run>/`` whose paths the summary prints.
    """
    from streamer.defaults import ensure_default_bundle
    from streamer.demo.report import WATCHED, DemoContext, DemoTally, render_summary
    from streamer.kafka.admin import apply_topics
    from streamer.topics import load_catalog

    began = time.perf_counter()
    settings = load_settings()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_tag = f"{int(time.time()) % 100000:05d}"
    run_dir = Path(args.out) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {"demo log": str(run_dir / "demo.log"), "worker log": str(run_dir / "worker.log")}
    bridge_url = os.environ.get("STREAMER_LLM_BASE_URL", "")
    if bridge_url:
        files["bridge log"] = str(run_dir / "bridge.log")
    # The log handler writes to this file until the process ends.
    demo_log = open(files["demo log"], "a", encoding="utf-8")  # noqa: SIM115
    configure_logging(settings, stream=demo_log)
    catalog = load_catalog(settings.topics_file)
    report = asyncio.run(apply_topics(settings, catalog.topics.values()))
    print(f"topics: {len(report.created)} created, {len(report.unchanged)} unchanged, {len(report.drift)} drift(s)")
    bundle_dir = ensure_default_bundle(settings)
    print(f"bundle: {bundle_dir}")
    print(f"logs of this run: {run_dir}/")

    watched = [settings.topic(t) for t in WATCHED]
    inputs = [settings.topic(t) for t in (TICKETS, LOGS, ESCALATIONS)]
    start = asyncio.run(_end_offsets(settings, sorted({*watched, *inputs})))
    prefix = len(settings.topic_prefix)
    starts = {(tp.topic[prefix:], tp.partition): offset for tp, offset in start.items()}
    env = {**os.environ, "STREAMER_BUNDLE_DIR": str(bundle_dir), "STREAMER_LOG_FORMAT": "json"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    handles = []
    try:
        for name, argv in (("worker", ["worker"]), ("bridge", ["bridge"])):
            if name == "bridge" and not bridge_url:
                continue
            handle = open(files[f"{name} log"], "ab")  # noqa: SIM115 (closed in finally)
            handles.append(handle)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "streamer", *argv], env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        worker = procs["worker"]
        waited = wait_until_ready(settings, worker, args.timeout)
        if waited is not None:
            print(f"worker ready in {waited:.1f} s")
        ticket_records, tickets, malformed = _demo_ticket_records(
            demo_tickets(args.tickets, seed=args.seed), run_tag, args.malformed
        )
        now = datetime.now(timezone.utc)
        entries: list[dict[str, Any] | str | bytes] = list(demo_log_story(args.logs, start=now, tag=run_tag))
        bad_logs = 0
        if args.malformed:
            for i in range(args.malformed, len(entries), args.malformed * 10):
                entries.insert(i, b"\xff\xfe" + f"{run_tag}-{i} truncated shipper frame".encode())
                bad_logs += 1
        tally = DemoTally(
            starts=starts,
            tickets=tickets,
            ticket_malformed=malformed,
            logs_sent=len(entries) - bad_logs,
            log_malformed=bad_logs,
            logs_from_ms=int(now.timestamp() * 1000),
        )
        produce_started_ms = int(time.time() * 1000)
        asyncio.run(_send_both(settings, ticket_records, list(log_records(entries))))
        asyncio.run(_collect(settings, watched, start, tally, args.timeout, procs, answer_timeout=args.answer_timeout))
        end_ms = int(time.time() * 1000)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=settings.shutdown_timeout_s + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for handle in handles:
            handle.close()
    replay_line, replay_command, budget = _demo_replay(settings, bundle_dir, produce_started_ms, end_ms, run_dir, files)
    ctx = DemoContext(
        bootstrap=settings.kafka_bootstrap,
        topics={name: settings.topic(name) for name in (*WATCHED, TICKETS, LOGS)},
        produce_started_ms=produce_started_ms,
        files=files,
        bridge=bool(bridge_url),
        llm_endpoint=_safe_url(bridge_url),
        replay=replay_line,
        replay_command=replay_command,
        escalation_budget=budget,
    )
    summary = render_summary(tally, ctx)
    sys.stdout.write(summary)
    print(f"\ndemo finished in {time.perf_counter() - began:.0f} s")
    return 0 if tally.done() else 1


def _safe_url(url: str) -> str:
    from streamer.bridge.llm import safe_url

    return safe_url(url) if url else ""


def _demo_ticket_records(
    docs: Iterable[dict[str, Any]], run_tag: str, every: int
) -> tuple[list[tuple[bytes | None, bytes]], set[str], int]:
    """Demo tickets with ids unique to this run, and one malformed record after every ``every``."""
    records: list[tuple[bytes | None, bytes]] = []
    expected: set[str] = set()
    malformed = 0
    for i, doc in enumerate(docs):
        doc["id"] = f"{doc['id']}-{run_tag}"
        expected.add(doc["id"])
        records.append((doc["id"].encode(), encode(doc)))
        if every and i % every == every - 1:
            bad_id = f"BAD-{run_tag}-{i}"
            records.append((bad_id.encode(), b'{"id": "' + bad_id.encode() + b'", "body": 42'))
            malformed += 1
    return records, expected, malformed


async def _send_both(
    settings: Settings, tickets: list[tuple[bytes | None, bytes]], logs: list[tuple[bytes | None, bytes]]
) -> None:
    """Both paths' traffic at once, each with its progress bar."""
    await asyncio.gather(
        produce_records(settings, settings.topic(TICKETS), tickets, total=len(tickets), position=0),
        produce_records(settings, settings.topic(LOGS), logs, total=len(logs), position=1),
    )


def _demo_replay(
    settings: Settings, bundle_dir: Path, from_ms: int, to_ms: int, run_dir: Path, files: dict[str, str]
) -> tuple[str, str, float | None]:
    """Replay the demo's ticket window through the bundle the worker ran and write the report files;
    returns the summary's line, the command that does it again and the bundle's escalation budget."""
    from streamer.models.bundle import load_bundle
    from streamer.replay.ranges import Window, format_ms
    from streamer.replay.report import write_html, write_json
    from streamer.replay.run import ReplayRequest, new_run_id, run_replay
    from streamer.runtime import load_ticket_runtime

    replay_settings = settings.model_copy(update={"bundle_dir": bundle_dir})
    request = ReplayRequest(
        window=Window(from_ms, to_ms + 1, None, None),
        run_id=new_run_id(),
        dry_run=True,
        batch_size=settings.max_batch,
        progress=True,
    )
    bundle = load_bundle(
        bundle_dir,
        device=settings.device,
        compute_type=settings.compute_type,
        intra_threads=settings.intra_threads,
        inter_threads=settings.inter_threads,
        batch_size=settings.max_batch,
    )
    runtime = load_ticket_runtime(replay_settings, bundle=bundle)
    report = asyncio.run(run_replay(replay_settings, runtime, request))
    json_path, html_path = run_dir / "replay.json", run_dir / "replay.html"
    write_json(report, json_path)
    write_html(report, html_path)
    files["replay report"] = f"{html_path} (and {json_path.name})"
    diff = report.diff
    changed = f", {diff.any_changed} of {diff.compared} decisions differ from live" if diff is not None else ""
    spent = {"escalation", "reasons"}  # what a moving threshold changes; the model's labels and routes stay
    spending = runtime.processor.spender is not None
    only_spent = diff is not None and all(not n for kind, n in diff.changed.items() if kind not in spent)
    if diff is not None and diff.any_changed and spending and only_spent:
        changed += " (escalations at the budget threshold, which follows recent traffic)"
    line = (
        f"{report.records} records of {settings.topic(TICKETS)} re-run through {bundle_dir} in "
        f"{report.replay_seconds:.1f} s{changed} (a different --bundle shows what a new model would change)"
    )
    command = (
        f"streamer replay --from {format_ms(from_ms)} --to {format_ms(to_ms + 1)} --bundle {bundle_dir} "
        f"--dry-run --html {run_dir / 'replay-again.html'}"
    )
    return line, command, runtime.processor.policy.budget


async def _collect(
    settings: Settings,
    watched: list[str],
    start: dict[Any, int],
    tally: DemoTally,
    timeout: float,
    procs: dict[str, subprocess.Popen[bytes]],
    *,
    answer_timeout: float,
) -> None:
    """Read the output topics into ``tally`` until both paths are done (and, with a bridge, every
    escalation is answered or ``answer_timeout`` has passed), ``timeout`` passes or a process exits."""
    from tqdm import tqdm

    prefix = len(settings.topic_prefix)
    watched_start = {tp: offset for tp, offset in start.items() if tp.topic in watched}
    deadline = time.monotonic() + timeout
    triaged = tqdm(total=tally.expected, unit="rec", desc="<- triaged", file=sys.stderr, position=0)
    answers = None
    answers_deadline = 0.0
    try:
        async for topic, record, timestamp_ms in _tail(settings, watched, watched_start):
            if record is not None:
                tally.observe(topic[prefix:], record, timestamp_ms)
                triaged.update(tally.triaged - triaged.n)
                if answers is not None:
                    answers.total = len(tally.escalation_ids)
                    answers.update(tally.settled - answers.n)
            if any(proc.poll() is not None for proc in procs.values()):
                break
            now = time.monotonic()
            if not tally.done():
                if now > deadline:
                    break
                continue
            if "bridge" not in procs:
                # The escalations and alerts of the last batch may still be on their way: stop at the
                # first fetch that brings nothing.
                if record is None:
                    break
                continue
            if answers is None:
                answers_deadline = now + answer_timeout
                answers = tqdm(total=len(tally.escalation_ids), unit="ans", desc="<- answers", file=sys.stderr)
                answers.update(tally.settled)
            if tally.settled >= len(tally.escalation_ids) or now > answers_deadline:
                break
    finally:
        triaged.close()
        if answers is not None:
            answers.close()


def wait_until_ready(settings: Settings, worker: subprocess.Popen[bytes], timeout: float) -> float | None:
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


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="the main job end to end: topics, bundle, worker, tickets and logs, summary, replay report",
    )
    demo.add_argument("--tickets", type=int, default=300, help="demo tickets to send (default 300)")
    demo.add_argument(
        "--logs", type=int, default=600, help="background log lines, before the burst and incidents (default 600)"
    )
    demo.add_argument("--rate", type=float, default=None, help="tickets per second (default: as fast as possible)")
    demo.add_argument(
        "--malformed", type=int, default=50, help="one malformed ticket every N, one log line every 10*N (0: none)"
    )
    demo.add_argument("--seed", type=int, default=11, help="seed of the demo traffic (default 11)")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up waiting after this many seconds")
    demo.add_argument(
        "--answer-timeout",
        type=float,
        default=300.0,
        help="with STREAMER_LLM_BASE_URL set: wait this long for the bridge's answers (default 300)",
    )
    demo.add_argument("--out", default="var/demo", help="where each run's logs and replay report go (var/demo)")
    demo.set_defaults(handler=run_demo)
