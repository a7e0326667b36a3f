"""End-to-end ticket benchmark through the real broker, against the bare model on the same texts.

    python bench/bench_ticket_worker.py [--tickets 2000] [--bundle DIR] [--json bench/results/ticket_worker.json]

1. Bare model: the triage core (encoder + heads + rules) on the same ticket texts, in worker-sized batches.
2. Throughput: a topic pre-filled with N tickets (BANKING77 texts wrapped as tickets, a quarter of them longer
   multi-sentence ones), one worker process; tickets/s from its first to its last output.
3. Latency: tickets paced at about 60% of that throughput; produce time to the enriched record's timestamp.
4. Contracts overhead: the core with output headers and trace context (tracing off, the default) against the
   same core without them, interleaved in this process; and the broker's cost of those headers (the same
   outputs produced with and without them). ``--overhead-only`` runs just this part.
The worker's peak RSS is read from /proc. BANKING77 is read from ../shared/data (never copied).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamer.defaults import ensure_default_bundle  # noqa: E402
from streamer.events import Output, RawEvent, Source  # noqa: E402
from streamer.headers import TraceParent, incoming_trace  # noqa: E402
from streamer.kafka import clients, local  # noqa: E402
from streamer.kafka.admin import apply_topics, delete_prefixed_topics  # noqa: E402
from streamer.kafka.clients import topic_partitions  # noqa: E402
from streamer.kafka.sender import Sender  # noqa: E402
from streamer.pipeline.batch import Batch  # noqa: E402
from streamer.pipeline.tickets import TicketProcessor  # noqa: E402
from streamer.runtime import load_ticket_runtime  # noqa: E402
from streamer.settings import Settings  # noqa: E402
from streamer.topics import load_catalog  # noqa: E402
from streamer.tracing import InputTrace  # noqa: E402

BANKING = REPO.parent / "shared" / "data" / "banking77" / "train.csv"


def ticket_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    with BANKING.open() as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    rng.shuffle(texts)
    out = []
    for i in range(n):
        if i % 4 == 3:  # longer, multi-sentence tickets
            out.append(" ".join(rng.sample(texts, rng.randint(3, 6))))
        else:
            out.append(texts[i % len(texts)])
    return out


def tickets(texts: list[str], run: str) -> list[dict[str, Any]]:
    tiers = ["free", "pro", "business", "enterprise"]
    return [
        {
            "id": f"B-{run}-{i}",
            "created_at": "2026-11-28T10:00:00Z",
            "channel": "email",
            "body": text,
            "customer": {"id": f"C-{i % 97}", "tier": tiers[i % 4]},
            "language": "en",
        }
        for i, text in enumerate(texts)
    ]


def bare_model(settings: Settings, bundle_dir: Path, docs: list[dict[str, Any]], batch: int) -> dict[str, float]:
    """The same core the worker runs, without Kafka: decode + triage + records, in batches."""
    runtime = load_ticket_runtime(settings.model_copy(update={"bundle_dir": bundle_dir}))
    processor = runtime.processor
    raws = [RawEvent(orjson.dumps(d), Source("bench", 0, i, 0), d["id"].encode()) for i, d in enumerate(docs)]
    processor(raws[:batch])  # warm-up
    started = time.perf_counter()
    inference = 0.0
    for i in range(0, len(raws), batch):
        inference += processor(raws[i : i + batch]).inference_s
    elapsed = time.perf_counter() - started
    return {"tickets_per_s": len(raws) / elapsed, "elapsed_s": elapsed, "inference_share": inference / elapsed}


class WithoutContracts(TicketProcessor):
    """The ticket core as it was before output headers: no trace context read, no headers built."""

    def __call__(self, raws: Any) -> Batch:
        unused = InputTrace(TraceParent("0" * 31 + "1", "0" * 15 + "1"))
        return self._process(raws, [unused] * len(raws), None)

    def _headers(self, *args: Any) -> tuple[tuple[str, bytes], ...]:
        return ()


def contracts_overhead(
    settings: Settings, bundle_dir: Path, docs: list[dict[str, Any]], batch: int, repeats: int
) -> dict[str, Any]:
    """Tickets/s of the core with and without headers (interleaved, alternating order), and the producer's
    cost of the headers: the same outputs sent with and without them, interleaved too."""
    runtime = load_ticket_runtime(settings.model_copy(update={"bundle_dir": bundle_dir}))
    with_headers = runtime.processor
    without = WithoutContracts(**{f.name: getattr(with_headers, f.name) for f in dataclasses.fields(with_headers)})
    parent = TraceParent.new(sampled=True).header().encode()
    raws = [
        RawEvent(
            orjson.dumps(d), Source("bench", 0, i, 0), d["id"].encode(), (("traceparent", parent),) if i % 2 else ()
        )
        for i, d in enumerate(docs)
    ]

    def rate(processor: TicketProcessor) -> tuple[float, list[Output]]:
        outputs: list[Output] = []
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(raws), batch):
            outputs.extend(processor(raws[i : i + batch]).outputs)
        cpu_per_ticket[processor is with_headers].append((time.process_time() - cpu) / len(raws))
        return len(raws) / (time.perf_counter() - started), outputs

    cpu_per_ticket: dict[bool, list[float]] = {True: [], False: []}

    with_headers(raws[:batch]), without(raws[:batch])  # warm-up
    on: list[float] = []
    off: list[float] = []
    outputs: list[Output] = []
    for r in range(repeats):
        for processor, into in ((with_headers, on), (without, off)) if r % 2 else ((without, off), (with_headers, on)):
            per_s, out = rate(processor)
            into.append(per_s)
            outputs = out if processor is with_headers else outputs
    bare = [dataclasses.replace(o, headers=()) for o in outputs]

    # The added work alone, timed apart from the model (best of 20: the least disturbed by other load):
    # reading each input's trace context and building every output's headers.
    per_ticket: dict[str, list[Output]] = {}
    for o in bare:
        per_ticket.setdefault(str(o.value.get("id")), []).append(o)
    groups = list(per_ticket.values())
    tracing = with_headers.tracing
    best = float("inf")
    for _ in range(20):
        sink = Batch(path="tickets")
        started = time.perf_counter()
        for raw, outs in zip(raws, groups, strict=False):
            trace = tracing.receive(incoming_trace(raw.headers), "bench", partition=0, offset=0, key=raw.key)
            for out in outs:
                with_headers._headers(out, trace, "2026-11-28T10:00:00.000Z", 0.5, sink, with_headers.contracts)
        best = min(best, (time.perf_counter() - started) / len(groups))

    async def send_rates() -> tuple[list[float], list[float]]:
        sender = Sender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix)
        sent_on: list[float] = []
        sent_off: list[float] = []
        try:
            await sender.send(bare[:100])  # warm-up: producer started, metadata fetched
            for r in range(repeats):
                for records, into in (
                    ((outputs, sent_on), (bare, sent_off)) if r % 2 else ((bare, sent_off), (outputs, sent_on))
                ):
                    started = time.perf_counter()
                    for i in range(0, len(records), 3 * batch):
                        await sender.send(records[i : i + 3 * batch])
                    into.append(len(docs) / (time.perf_counter() - started))
        finally:
            await sender.close()
        return sent_on, sent_off

    sent_on, sent_off = asyncio.run(send_rates())
    med = statistics.median
    core_ratio = med(on) / med(off)
    # The producer's extra time per ticket, as a share of a ticket's time in the worker (core-bound).
    send_extra_s = 1 / med(sent_on) - 1 / med(sent_off)
    header_bytes = sum(len(k) + len(v) for o in outputs for k, v in o.headers) / len(docs)
    core_cpu_s = med(cpu_per_ticket[False])
    return {
        "tickets": len(docs),
        "repeats": repeats,
        "headers_us_per_ticket": best * 1e6,
        "core_cpu_us_per_ticket_without": core_cpu_s * 1e6,
        "core_cpu_us_per_ticket_with": med(cpu_per_ticket[True]) * 1e6,
        "headers_share_of_core_cpu": best / core_cpu_s,
        "core_with_headers_per_s": on,
        "core_without_headers_per_s": off,
        "core_ratio_with_to_without": core_ratio,
        "send_with_headers_tickets_per_s": sent_on,
        "send_without_headers_tickets_per_s": sent_off,
        "send_extra_us_per_ticket": send_extra_s * 1e6,
        "header_bytes_per_ticket": header_bytes,
        "outputs_per_ticket": len(outputs) / len(docs),
    }


def print_overhead(o: dict[str, Any]) -> None:
    med = statistics.median
    print(f"{'contracts overhead (tracing off)':<44}{'with':>10}{'without':>10}{'ratio':>8}")
    on, off = med(o["core_with_headers_per_s"]), med(o["core_without_headers_per_s"])
    print(f"{'  core tickets/s, median of ' + str(o['repeats']):<44}{on:>10.1f}{off:>10.1f}{on / off:>8.3f}")
    s_on, s_off = med(o["send_with_headers_tickets_per_s"]), med(o["send_without_headers_tickets_per_s"])
    print(f"{'  producing their outputs, tickets/s':<44}{s_on:>10.0f}{s_off:>10.0f}{s_on / s_off:>8.3f}")
    print(f"  header bytes per ticket {o['header_bytes_per_ticket']:.0f} ({o['outputs_per_ticket']:.2f} outputs)")
    print(
        f"  core CPU per ticket {o['core_cpu_us_per_ticket_with']:.0f} / {o['core_cpu_us_per_ticket_without']:.0f} us; "
        f"headers + trace context alone {o['headers_us_per_ticket']:.1f} us per ticket = "
        f"{o['headers_share_of_core_cpu']:.2%} of the core's CPU"
    )


async def produce(
    bootstrap: str, topic: str, docs: list[dict[str, Any]], rate: float | None = None, *, linger_ms: int = 10
) -> None:
    """Send ``docs`` (at ``rate`` per second when given); ``linger_ms=0`` lets a record leave when it is stamped."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    try:
        started = time.perf_counter()
        for i, doc in enumerate(docs):
            await producer.send(topic, orjson.dumps(doc), key=doc["id"].encode())
            if rate:
                ahead = (i + 1) / rate - (time.perf_counter() - started)
                if ahead > 0:
                    if linger_ms:  # what lingers would wait out the pause: send it first
                        await producer.flush()
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


async def collect(
    bootstrap: str, topic: str, ids: set[str], timeout: float, *, parse: bool = False
) -> list[tuple[str, int, int, float]]:
    """(id, source timestamp ms, enriched record timestamp ms, arrival time) for every id.

    Without ``parse`` the ids come from the keys and the source timestamp is left 0: this consumer
    shares the CPUs with the worker and the broker, so it does as little as it can.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: dict[str, tuple[str, int, int, float]] = {}
    try:
        parts = await topic_partitions(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while len(seen) < len(ids) and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for m in messages:
                    key = m.key.decode()
                    if key in ids and key not in seen:
                        source_ms = orjson.loads(m.value)["source"]["timestamp_ms"] if parse else 0
                        seen[key] = (key, source_ms, m.timestamp, time.time())
    finally:
        await consumer.stop()
    return list(seen.values())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--batching", choices=["adaptive", "fixed"], default="adaptive", help="STREAMER_BATCHING")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group (default 1)")
    parser.add_argument("--intra-threads", type=int, default=0, help="STREAMER_INTRA_THREADS of the workers")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "ticket_worker.json")
    parser.add_argument("--overhead-tickets", type=int, default=512, help="tickets per pass of the overhead check")
    parser.add_argument("--overhead-repeats", type=int, default=6, help="interleaved passes of the overhead check")
    parser.add_argument("--overhead-only", action="store_true", help="only the headers/tracing overhead check")
    args = parser.parse_args()

    bootstrap = os.environ.get("STREAMER_KAFKA_BOOTSTRAP") or local.start().bootstrap_servers
    run = uuid.uuid4().hex[:6]
    prefix = f"bench.{run}."
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, max_batch=args.max_batch)
    bundle_dir = args.bundle or ensure_default_bundle(
        settings.model_copy(update={"bundle_dir": REPO / "var" / "bundles" / "default"}), progress=False
    )
    asyncio.run(apply_topics(settings, load_catalog(settings.topics_file).topics.values()))
    docs = tickets(ticket_texts(args.tickets), run)

    # The overhead check sends enriched records of the same tickets: on topics of their own, or the
    # end-to-end rate below would start at those records instead of the worker's.
    overhead_settings = settings.model_copy(update={"topic_prefix": f"{prefix}overhead."})
    asyncio.run(apply_topics(overhead_settings, load_catalog(settings.topics_file).topics.values()))
    overhead = contracts_overhead(
        overhead_settings, bundle_dir, docs[: args.overhead_tickets], args.max_batch, args.overhead_repeats
    )
    print_overhead(overhead)
    if args.overhead_only:
        asyncio.run(delete_prefixed_topics(settings))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"contracts_overhead": overhead, "load_average_end": os.getloadavg()}, indent=2)
        )
        return 0

    bare = bare_model(settings, bundle_dir, docs, args.max_batch)
    print(f"bare core: {bare['tickets_per_s']:.1f} tickets/s (model share {bare['inference_share']:.0%})")

    asyncio.run(produce(bootstrap, prefix + "support.tickets.v1", docs))
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": bootstrap,
        "STREAMER_TOPIC_PREFIX": prefix,
        "STREAMER_GROUP_ID": f"bench-{run}",
        "STREAMER_BUNDLE_DIR": str(bundle_dir),
        "STREAMER_MAX_BATCH": str(args.max_batch),
        "STREAMER_BATCHING": args.batching,
        "STREAMER_LOG_LEVEL": "WARNING",
        "STREAMER_INTRA_THREADS": str(args.intra_threads),
        "STREAMER_METRICS_PORT": "0",
    }
    workers = [
        subprocess.Popen([sys.executable, "-m", "streamer", "worker", "--only", "tickets"], env=env)
        for _ in range(args.workers)
    ]
    try:
        got = asyncio.run(collect(bootstrap, prefix + "support.tickets.enriched.v1", {d["id"] for d in docs}, 900))
        stamps = sorted(g[2] for g in got)
        e2e_rate = (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-9)
        print(f"end to end: {len(got)}/{len(docs)} tickets, {e2e_rate:.1f} tickets/s")

        paced_rate = max(1.0, 0.6 * e2e_rate)
        n_paced = int(paced_rate * args.latency_seconds)
        paced = tickets(ticket_texts(n_paced, seed=2), run + "p")
        asyncio.run(produce(bootstrap, prefix + "support.tickets.v1", paced, rate=paced_rate))
        lat_got = asyncio.run(
            collect(bootstrap, prefix + "support.tickets.enriched.v1", {d["id"] for d in paced}, 300, parse=True)
        )
        latencies = sorted(g[2] - g[1] for g in lat_got)
        rss = max(peak_rss_mb(w.pid) for w in workers)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)

    asyncio.run(delete_prefixed_topics(settings))

    # The bare core again, after the worker: load from other processes drifts on a shared machine, and
    # measuring it on both sides of the end-to-end run keeps the ratio honest.
    bare_after = bare_model(settings, bundle_dir, docs, args.max_batch)
    print(f"bare core again: {bare_after['tickets_per_s']:.1f} tickets/s")
    bare = {
        "tickets_per_s": (bare["tickets_per_s"] + bare_after["tickets_per_s"]) / 2,
        "inference_share": (bare["inference_share"] + bare_after["inference_share"]) / 2,
        "before": bare["tickets_per_s"],
        "after": bare_after["tickets_per_s"],
    }

    q = statistics.quantiles(latencies, n=100)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {
            "tickets": args.tickets,
            "max_batch": args.max_batch,
            "batching": args.batching,
            "workers": args.workers,
            "intra_threads": args.intra_threads,
            "bundle": str(bundle_dir),
        },
        "bare_tickets_per_s": bare["tickets_per_s"],
        "bare_model_share": bare["inference_share"],
        "bare_before_after_tickets_per_s": [bare["before"], bare["after"]],
        "load_average_end": os.getloadavg(),
        "e2e_tickets_per_s": e2e_rate,
        "ratio_e2e_to_bare": e2e_rate / bare["tickets_per_s"],
        "latency_rate_per_s": paced_rate,
        "latency_ms": {"p50": statistics.median(latencies), "p99": q[98], "n": len(latencies)},
        "worker_peak_rss_mb": rss,
        "contracts_overhead": overhead,
    }
    print()
    print(f"{'metric':<34}{'value':>12}")
    print(f"{'bare core tickets/s':<34}{result['bare_tickets_per_s']:>12.1f}")
    print(f"{f'end-to-end tickets/s ({args.workers} worker)':<34}{e2e_rate:>12.1f}")
    print(f"{'ratio end-to-end / bare':<34}{result['ratio_e2e_to_bare']:>12.2f}")
    print(f"{'latency p50 ms @ ' + format(paced_rate, '.0f') + '/s':<34}{result['latency_ms']['p50']:>12.0f}")
    print(f"{'latency p99 ms':<34}{result['latency_ms']['p99']:>12.0f}")
    print(f"{'worker peak RSS MB':<34}{rss:>12.0f}")
    print()
    print_overhead(overhead)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
