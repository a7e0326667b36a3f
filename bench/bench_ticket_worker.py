"""End-to-end ticket benchmark through the real broker, against the bare model on the same texts.

    python bench/bench_ticket_worker.py [--tickets 2000] [--bundle DIR] [--json bench/results/ticket_worker.json]

1. Bare model: the triage core (encoder + heads + rules) on the same ticket texts, in worker-sized batches.
2. Throughput: a topic pre-filled with N tickets (BANKING77 texts wrapped as tickets, a quarter of them longer
   multi-sentence ones), one worker process; tickets/s from its first to its last output.
3. Latency: tickets paced at about 60% of that throughput; produce time to the enriched record's timestamp.
The worker's peak RSS is read from /proc. BANKING77 is read from ../shared/data (never copied).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
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
from streamer.events import RawEvent, Source  # noqa: E402
from streamer.kafka import local  # noqa: E402
from streamer.kafka.admin import apply_topics, delete_prefixed_topics  # noqa: E402
from streamer.kafka.clients import topic_partitions  # noqa: E402
from streamer.settings import Settings  # noqa: E402
from streamer.topics import load_catalog  # noqa: E402
from streamer.worker import load_ticket_runtime  # noqa: E402

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


async def produce(bootstrap: str, topic: str, docs: list[dict[str, Any]], rate: float | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        started = time.perf_counter()
        for i, doc in enumerate(docs):
            await producer.send(topic, orjson.dumps(doc), key=doc["id"].encode())
            if rate:
                ahead = (i + 1) / rate - (time.perf_counter() - started)
                if ahead > 0:
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
    }
    print()
    print(f"{'metric':<34}{'value':>12}")
    print(f"{'bare core tickets/s':<34}{result['bare_tickets_per_s']:>12.1f}")
    print(f"{f'end-to-end tickets/s ({args.workers} worker)':<34}{e2e_rate:>12.1f}")
    print(f"{'ratio end-to-end / bare':<34}{result['ratio_e2e_to_bare']:>12.2f}")
    print(f"{'latency p50 ms @ ' + format(paced_rate, '.0f') + '/s':<34}{result['latency_ms']['p50']:>12.0f}")
    print(f"{'latency p99 ms':<34}{result['latency_ms']['p99']:>12.0f}")
    print(f"{'worker peak RSS MB':<34}{rss:>12.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
