"""Log worker throughput through the real broker: a pre-filled topic, one worker process, lines/s out.

    python bench/bench_log_worker.py [--lines 200000] [--seed 7] [--bare 20000] [--workers 1]
    python bench/bench_log_worker.py --in-process [--inline | --stub-core] [--profile] [--lines 50000]

1. Bare core: ``LogProcessor`` (decode + triage with the bundle's incident head + JSON encoding) on the
   first ``--bare`` lines, no Kafka: the per-process ceiling of the log path on this machine.
2. A topic pre-filled with ``--lines`` lines of ``streamer.demo.demo_log_lines`` (JSON shipper records,
   nginx/syslog/postgres/ISO text lines, stack traces, bursts), keyed by service as ``streamer produce
   logs`` keys them. Then one ``streamer worker --only logs`` process (default; ``--workers N`` starts N in
   one group), or the ``LogService`` in
   this process (``--in-process``; ``--inline`` runs the core on the event loop instead of its thread;
   ``--profile`` adds cProfile on the loop and on the triage thread and prints where the time goes;
   ``--stub-core`` replaces triage with one line-sized output per line: what the Kafka side costs alone).
3. Lines/s from the first to the last enriched output, by the output records' timestamps, read after the
   run with a consumer that only looks at keys and timestamps. The worker's CPU seconds between its first
   and its last commit give the CPU cost per line; the load average shows what else ran on the machine.

Writes ``bench/results/log_worker.json`` (``log_worker_in_process.json`` with ``--in-process``; ``--json``);
deletes its topics unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_ticket_worker import peak_rss_mb  # noqa: E402

from streamer.defaults import ensure_default_bundle  # noqa: E402
from streamer.demo import demo_log_lines  # noqa: E402
from streamer.events import Output, RawEvent, Source  # noqa: E402
from streamer.kafka import clients, local  # noqa: E402
from streamer.kafka.admin import apply_topics, delete_prefixed_topics  # noqa: E402
from streamer.kafka.sender import Sender  # noqa: E402
from streamer.pipeline.batch import Batch  # noqa: E402
from streamer.pipeline.logs import LogProcessor  # noqa: E402
from streamer.runner import log_records  # noqa: E402
from streamer.runtime import LogRuntime, load_log_runtime, log_group_id, tune_garbage_collector  # noqa: E402
from streamer.settings import Settings  # noqa: E402
from streamer.topics import ALERTS, DEADLETTER, ESCALATIONS, LOG_TEMPLATES, LOGS, LOGS_ENRICHED, load_catalog  # noqa: E402
from streamer.worker import log_service  # noqa: E402

_CATALOG = load_catalog(REPO / "topics" / "topics.yaml")
#: The team log topics the logs rules of routes.yaml may send to (the worker needs them to exist).
TEAMS = tuple(
    name
    for name, spec in _CATALOG.topics.items()
    if spec.schema == _CATALOG[LOGS_ENRICHED].schema and name != LOGS_ENRICHED
)
TOPICS = (LOGS, LOGS_ENRICHED, ALERTS, LOG_TEMPLATES, ESCALATIONS, DEADLETTER, *TEAMS)
#: Functions whose cumulative time says where the triage thread's time goes (name -> label).
THREAD_PARTS = {
    "decode_logs": "decode",
    "triage_logs": "triage_logs (all of it)",
    "redact": "  PII redaction",
    "add": "  template mining",
    "extract_log_entities": "  entity extraction",
    "ip_entities": "  IP entities",
    "observe": "  burst counting",
    "classify_templates": "  incident model (new templates only)",
    "_encode": "JSON encoding of outputs",
}
LOOP_PARTS = {
    "getmany": "fetch (getmany)",
    "_consume": "consume loop (raw events)",
    "_send_once": "produce outputs (batch API)",
    "_commit": "commit offsets",
}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_records(n: int, seed: int) -> list[tuple[bytes | None, bytes]]:
    return list(log_records(demo_log_lines(n, seed=seed)))


def bare_core(runtime: LogRuntime, records: Sequence[tuple[bytes | None, bytes]], batch: int) -> dict[str, float]:
    """The worker's processor on the same lines without Kafka, on a state of its own."""
    fresh = load_log_runtime(Settings(), runtime.bundle)
    processor = LogProcessor(
        fresh.state, fresh.classifier, fresh.model_info, fresh.limits, fresh.contracts, router=fresh.router
    )
    raws = [RawEvent(v, Source(LOGS, 0, i, 1_795_860_000_000 + i), k) for i, (k, v) in enumerate(records)]
    started, cpu = time.perf_counter(), time.process_time()
    parts = {"decode_s": 0.0, "triage_s": 0.0, "encode_s": 0.0}
    for i in range(0, len(raws), batch):
        out = processor(raws[i : i + batch])
        parts["decode_s"] += out.decode_s
        parts["triage_s"] += out.inference_s
        parts["encode_s"] += out.encode_s
    elapsed = time.perf_counter() - started
    n = len(raws)
    return {
        "lines": n,
        "lines_per_s": n / elapsed,
        "cpu_us_per_line": (time.process_time() - cpu) / n * 1e6,
        **{k.replace("_s", "_us_per_line"): v / n * 1e6 for k, v in parts.items()},
        "templates_classified": fresh.classifier.classified,
        "model_calls": fresh.classifier.calls,
    }


async def prefill(settings: Settings, records: Sequence[tuple[bytes | None, bytes]]) -> float:
    sender = Sender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix)
    started = time.perf_counter()
    try:
        for i in range(0, len(records), 10_000):
            await sender.send([Output(LOGS, k, {}, (), v) for k, v in records[i : i + 10_000]])
    finally:
        await sender.close()
    return time.perf_counter() - started


async def committed_total(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> int:
    offsets = await asyncio.gather(*(consumer.committed(tp) for tp in parts))
    return sum(o or 0 for o in offsets)


async def watch_worker(settings: Settings, pids: Sequence[int], total: int, timeout: float) -> dict[str, Any]:
    """Poll the log group's commits until every input is committed; CPU of the worker in between."""
    consumer = clients.consumer(settings, group_id=log_group_id(settings), client_id="bench-watch")
    await consumer.start()
    try:
        parts = await clients.topic_partitions(consumer, settings.topic(LOGS))
        first: tuple[float, float, int] | None = None
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            done = await committed_total(consumer, parts)
            if done and first is None:
                first = (time.perf_counter(), sum(map(cpu_seconds, pids)), done)
            if done >= total:
                break
            await asyncio.sleep(0.5)
        end = (time.perf_counter(), sum(map(cpu_seconds, pids)), done)
        rss = max(map(peak_rss_mb, pids))
    finally:
        await consumer.stop()
    if first is None:
        raise SystemExit("the worker committed nothing before the timeout")
    lines = end[2] - first[2]
    return {
        "committed": done,
        "cpu_us_per_line": (end[1] - first[1]) / max(lines, 1) * 1e6,
        "cores_busy": (end[1] - first[1]) / max(end[0] - first[0], 1e-9),
        "peak_rss_mb": round(rss, 1),
    }


async def read_outputs(settings: Settings) -> dict[str, Any]:
    """Counts per output topic and the first/last enriched timestamps; values are never parsed."""
    out: dict[str, Any] = {}
    for declared in TOPICS[1:]:
        # One consumer per topic: an assigned consumer's metadata covers only the topics it holds.
        consumer = clients.consumer(settings, group_id=None, client_id="bench-read", max_partition_fetch_bytes=8 << 20)
        await consumer.start()
        try:
            parts = await clients.topic_partitions(consumer, settings.topic(declared))
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            count, first, last = 0, None, None
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                for messages in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                    count += len(messages)
                    if declared == LOGS_ENRICHED:
                        stamps = [m.timestamp for m in messages]
                        first = min(stamps) if first is None else min(first, *stamps)
                        last = max(stamps) if last is None else max(last, *stamps)
            out[declared] = count
            if declared == LOGS_ENRICHED:
                out["first_ms"], out["last_ms"] = first, last
        finally:
            await consumer.stop()
    return out


def run_subprocess(
    settings: Settings, bundle_dir: Path, total: int, timeout: float, workers: int = 1
) -> dict[str, Any]:
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMER_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMER_GROUP_ID": settings.group_id,
        "STREAMER_BUNDLE_DIR": str(bundle_dir),
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "streamer", "worker", "--only", "logs"]
    procs = [subprocess.Popen(command, env=env) for _ in range(workers)]
    try:
        watched = asyncio.run(watch_worker(settings, [p.pid for p in procs], total, timeout))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    watched["exit_codes"] = [proc.returncode for proc in procs]
    return watched


class StubProcessor(LogProcessor):
    """No triage: one output per line, the line itself, keyed like an enriched record (``--stub-core``)."""

    def __call__(self, raws: Sequence[RawEvent]) -> Batch:
        out = [Output(LOGS_ENRICHED, raw.key or b"unknown", {}, (), raw.value or b"null") for raw in raws]
        return Batch(path="logs", outputs=out, size=len(raws), processed=len(raws))


def run_in_process(
    settings: Settings,
    runtime: LogRuntime,
    total: int,
    timeout: float,
    *,
    inline: bool,
    profile: bool,
    stub: bool = False,
) -> dict[str, Any]:
    """The LogService in this process (no Faust: the log path does not use it), optionally profiled."""
    thread_prof, loop_prof = cProfile.Profile(), cProfile.Profile()
    executor = (
        None if inline else ThreadPoolExecutor(1, "log-triage", initializer=thread_prof.enable if profile else None)
    )
    busy: dict[str, float] = {"thread_s": 0.0, "lines": 0}

    def on_batch(batch: Batch) -> None:
        busy["thread_s"] += batch.decode_s + batch.inference_s + batch.encode_s
        busy["lines"] += batch.size

    async def go() -> dict[str, Any]:
        service = log_service(settings, runtime, inline=inline, executor=executor, on_batch=on_batch)
        if stub:
            service.processor = StubProcessor(
                runtime.state, runtime.classifier, runtime.model_info, runtime.limits, runtime.contracts
            )
        await service.start()
        started: tuple[float, float, float] | None = None
        deadline = time.monotonic() + timeout
        try:
            while busy["lines"] < total and time.monotonic() < deadline:
                if busy["lines"] and started is None:
                    started = (time.perf_counter(), time.process_time(), busy["lines"])
                await asyncio.sleep(0.05)
            end = (time.perf_counter(), time.process_time(), busy["lines"])
        finally:
            await service.stop()
        assert started is not None, "nothing processed before the timeout"
        lines = end[2] - started[2]
        return {
            "committed": int(busy["lines"]),
            "cpu_us_per_line": (end[1] - started[1]) / max(lines, 1) * 1e6,
            "cores_busy": (end[1] - started[1]) / max(end[0] - started[0], 1e-9),
            "core_thread_us_per_line": busy["thread_s"] / max(busy["lines"], 1) * 1e6,
        }

    if profile:
        loop_prof.enable()
    try:
        result = asyncio.run(go())
    finally:
        if profile:
            loop_prof.disable()
    if executor is not None:
        if profile:
            executor.submit(thread_prof.disable).result()
        executor.shutdown()
    if profile:
        result["profile"] = {
            "loop": where_time_goes(loop_prof, LOOP_PARTS, total),
            "thread": where_time_goes(thread_prof, THREAD_PARTS, total) if not inline else {},
        }
    return result


def where_time_goes(prof: cProfile.Profile, parts: dict[str, str], lines: int) -> dict[str, Any]:
    """Cumulative us per line of the named functions, and the top functions by own time."""
    stats = pstats.Stats(prof)
    table: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    for (file, _, name), (_, _, _, cumulative, _) in raw.items():
        if name in parts and ("streamer" in file or "aiokafka" in file):
            label = parts[name]
            table[label] = table.get(label, 0.0) + cumulative / lines * 1e6
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
    top = [line for line in text.getvalue().splitlines() if line.strip()][-16:]
    return {"us_per_line": {k: round(v, 1) for k, v in table.items()}, "top_own_time": top}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000, help="lines pre-filled (default 200000)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the demo mix (default 7)")
    ap.add_argument("--bare", type=int, default=20_000, help="lines for the bare-core row (default 20000; 0: skip)")
    ap.add_argument("--batch", type=int, default=2000, help="bare-core batch size (default 2000, the worker's)")
    ap.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: the default bundle)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes in the group (default 1)")
    ap.add_argument("--in-process", action="store_true", help="run the LogService in this process")
    ap.add_argument("--inline", action="store_true", help="with --in-process: the core on the event loop")
    ap.add_argument("--profile", action="store_true", help="with --in-process: cProfile loop and thread")
    ap.add_argument(
        "--stub-core", action="store_true", help="with --in-process: no triage, one line-sized output per line"
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark's topics")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/log_worker[_in_process].json)")
    args = ap.parse_args()
    results = REPO / "bench" / "results"
    args.json = args.json or results / ("log_worker_in_process.json" if args.in_process else "log_worker.json")
    if (args.inline or args.profile or args.stub_core) and not args.in_process:
        ap.error("--inline, --profile and --stub-core need --in-process")

    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader elections of the fresh topics are retried
    bootstrap = os.environ.get("STREAMER_KAFKA_BOOTSTRAP") or local.start().bootstrap_servers
    run = uuid.uuid4().hex[:6]
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench.logs.{run}.", group_id=f"bench-logs-{run}")
    bundle_dir = args.bundle or ensure_default_bundle(
        settings.model_copy(update={"bundle_dir": REPO / "var" / "bundles" / "default"}), progress=False
    )
    settings = settings.model_copy(update={"bundle_dir": bundle_dir})
    runtime = load_log_runtime(settings)
    tune_garbage_collector()  # as ``streamer worker`` does once it has loaded, for the rows measured here

    records = make_records(args.lines, args.seed)
    bare = bare_core(runtime, records[: args.bare], args.batch) if args.bare else None
    if bare is not None:
        print(f"bare core: {bare['lines_per_s']:,.0f} lines/s ({bare['cpu_us_per_line']:.0f} us CPU per line)")

    catalog = load_catalog(settings.topics_file)
    asyncio.run(apply_topics(settings, [catalog[t] for t in TOPICS]))
    try:
        fill_s = asyncio.run(prefill(settings, records))
        print(f"pre-filled {len(records):,} lines in {fill_s:.1f} s")
        load_before = loadavg()
        if args.in_process:
            mode = "in-process, inline" if args.inline else "in-process, thread"
            mode += ", cProfile" if args.profile else ""
            mode += ", stub core (Kafka side only)" if args.stub_core else ""
            run_info = run_in_process(
                settings,
                runtime,
                len(records),
                args.timeout,
                inline=args.inline,
                profile=args.profile,
                stub=args.stub_core,
            )
        else:
            mode = "worker process (streamer worker --only logs)"
            mode = mode if args.workers == 1 else f"{args.workers} worker processes (streamer worker --only logs)"
            run_info = run_subprocess(settings, bundle_dir, len(records), args.timeout, args.workers)
        load_after = loadavg()
        outputs = asyncio.run(read_outputs(settings))
    finally:
        if not args.keep:
            asyncio.run(delete_prefixed_topics(settings))

    enriched = outputs[LOGS_ENRICHED]
    span_s = max((outputs["last_ms"] - outputs["first_ms"]) / 1000, 1e-9)
    rate = enriched / span_s
    result: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"lines": len(records), "seed": args.seed, "mode": mode, "bundle": str(bundle_dir)},
        "lines_per_s": round(rate),
        "span_s": round(span_s, 2),
        "load_average": {"before": load_before, "after": load_after},
        "worker": run_info,
        "outputs": {t: outputs[t] for t in TOPICS[1:]},
        "bare_core": bare,
        "target_lines_per_s": 20_000,
    }
    rows = [
        ("mode", mode),
        ("lines in", f"{len(records):,}"),
        ("enriched out", f"{enriched:,}"),
        ("dead letters", f"{outputs[DEADLETTER]:,}"),
        ("alerts / escalations", f"{outputs[ALERTS]:,} / {outputs[ESCALATIONS]:,}"),
        ("template records", f"{outputs[LOG_TEMPLATES]:,}"),
        ("first to last output", f"{span_s:.1f} s"),
        ("lines/s", f"{rate:,.0f}"),
        ("worker CPU per line", f"{run_info['cpu_us_per_line']:.0f} us"),
        ("worker cores busy (all)", f"{run_info['cores_busy']:.2f}"),
        *([("worker peak RSS", f"{run_info['peak_rss_mb']:.0f} MiB")] if "peak_rss_mb" in run_info else []),
        ("load average before/after", f"{load_before[0]:.2f} / {load_after[0]:.2f}"),
    ]
    if bare is not None:
        rows.append(("bare core lines/s", f"{bare['lines_per_s']:,.0f} ({bare['cpu_us_per_line']:.0f} us CPU/line)"))
        rows.append(("  decode / triage / encode", "{decode_us_per_line:.0f} / {triage_us_per_line:.0f} / "
                     "{encode_us_per_line:.0f} us per line".format(**bare)))  # fmt: skip
        rows.append(("  model", f"{bare['templates_classified']} templates in {bare['model_calls']} calls"))
    print()
    for name, value in rows:
        print(f"{name:<28} {value}")
    for side, prof in (run_info.get("profile") or {}).items():
        if not prof:
            continue
        print(f"\n{side}: cumulative us per line (under cProfile)")
        for label, us in sorted(prof["us_per_line"].items(), key=lambda kv: -kv[1]):
            print(f"  {label:<40} {us:8.1f}")
        print("\n".join(prof["top_own_time"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
