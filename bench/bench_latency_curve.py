"""Ticket latency as a curve: p50/p99 end to end at 10, 30, 60 and 90% of capacity, adaptive vs fixed batching.

    python bench/bench_latency_curve.py [--levels 0.1,0.3,0.6,0.9] [--seconds 15] [--backlog 1500]
                                        [--modes fixed,adaptive] [--json bench/results/latency_curve.json]

One worker process per batching mode (``STREAMER_BATCHING``), each on topics of its own, both alive for the
whole run so that every measurement of one mode sits next to the same measurement of the other (the order
alternates from level to level) and load from other processes falls on both:

1. saturation: a backlog of ``--backlog`` tickets per mode, tickets/s from the first output to the last;
   capacity = the higher of the two modes' figures;
2. for each level: tickets paced at ``level x capacity`` for ``--seconds``, latency from the producer's record
   timestamp to the enriched record's (the same clock), split into short tickets (one BANKING77 query) and
   long ones (3-6 queries joined, a quarter of the traffic), and the throughput achieved;
3. saturation again, modes in the reverse order (the figure reported is the mean of both rounds).

Each worker logs every batch (size, tokens, how long its oldest record waited, inference time): the table
shows the median batch size and wait per level, which is where the latency goes. The load average of the
machine is recorded next to every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ticket_worker import produce, ticket_texts, tickets  # noqa: E402

from streamer.defaults import ensure_default_bundle  # noqa: E402
from streamer.kafka import local  # noqa: E402
from streamer.kafka.admin import apply_topics, delete_prefixed_topics  # noqa: E402
from streamer.kafka.clients import topic_partitions  # noqa: E402
from streamer.settings import Settings  # noqa: E402
from streamer.topics import load_catalog  # noqa: E402

TARGETS_P99_MS = {0.1: 100.0, 0.6: 250.0}


async def collect(bootstrap: str, topic: str, ids: set[str], timeout: float) -> dict[str, tuple[int, int]]:
    """``{id: (source timestamp ms, enriched timestamp ms)}`` for every id seen in ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: dict[str, tuple[int, int]] = {}
    try:
        parts = await topic_partitions(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while len(seen) < len(ids) and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300, max_records=5000)).values():
                for m in messages:
                    key = m.key.decode()
                    if key in ids and key not in seen:
                        seen[key] = (orjson.loads(m.value)["source"]["timestamp_ms"], m.timestamp)
    finally:
        await consumer.stop()
    return seen


def is_long(ticket_id: str) -> bool:
    """``ticket_texts`` makes every fourth ticket a long one."""
    return int(ticket_id.rsplit("-", 1)[1]) % 4 == 3


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": values[0] if values else float("nan"), "p99": values[0] if values else float("nan"), "n": 0}
    q = statistics.quantiles(values, n=100)
    return {"p50": statistics.median(values), "p99": q[98], "n": len(values)}


class Mode:
    """One batching mode: its topics, its worker process and its log."""

    def __init__(self, name: str, bootstrap: str, run: str, bundle: Path, logs: Path) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.prefix = f"bench.{run}.{name}."
        self.settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=self.prefix)
        self.run = f"{run}{name[0]}"
        self.bundle = bundle
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.batches: int = 0

    @property
    def source(self) -> str:
        return self.prefix + "support.tickets.v1"

    @property
    def enriched(self) -> str:
        return self.prefix + "support.tickets.enriched.v1"

    def start(self) -> None:
        asyncio.run(apply_topics(self.settings, load_catalog(self.settings.topics_file).topics.values()))
        env = {
            **os.environ,
            "STREAMER_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMER_TOPIC_PREFIX": self.prefix,
            "STREAMER_GROUP_ID": f"bench-{self.run}",
            "STREAMER_BUNDLE_DIR": str(self.bundle),
            "STREAMER_BATCHING": self.name,
            "STREAMER_LOG_LEVEL": "DEBUG",
            "STREAMER_LOG_FORMAT": "json",
            "STREAMER_METRICS_PORT": "0",
        }
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker", "--only", "tickets"], env=env, stdout=log, stderr=log
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        asyncio.run(delete_prefixed_topics(self.settings))

    def send(self, docs: list[dict[str, Any]], rate: float | None = None) -> tuple[float, float]:
        """Produce ``docs``, wait for all their outputs; (wall seconds of the sending, of everything)."""
        started = time.time()
        asyncio.run(produce(self.bootstrap, self.source, docs, rate, linger_ms=0))
        sent = time.time()
        self.last = asyncio.run(collect(self.bootstrap, self.enriched, {d["id"] for d in docs}, 600))
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} worker died"
        return sent - started, time.time() - started

    def batches_between(self, start: float, end: float) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if '"batch done"' not in line:
                continue
            record = orjson.loads(line)
            stamp = time.mktime(time.strptime(record["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if start <= stamp <= end + 1:
                out.append(record)
        return out


def saturation(mode: Mode, n: int, tag: str) -> dict[str, Any]:
    docs = tickets(ticket_texts(n, seed=11), f"{mode.run}{tag}")
    load_before = os.getloadavg()[0]
    mode.send(docs)
    stamps = sorted(out for _, out in mode.last.values())
    rate = (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-9)
    print(f"  {mode.name:<9} saturation {rate:7.1f} tickets/s  (load {load_before:.1f})", flush=True)
    return {"tickets_per_s": rate, "n": len(stamps), "load_average": load_before}


def paced(mode: Mode, level: float, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    n = max(20, int(rate * seconds))
    docs = tickets(ticket_texts(n, seed=seed), f"{mode.run}L{int(level * 100)}")
    load_before = os.getloadavg()[0]
    started = time.time()
    mode.send(docs, rate)
    ended = time.time()
    got = mode.last
    latency = {tid: float(out - src) for tid, (src, out) in got.items()}
    outs = sorted(out for _, out in got.values())
    srcs = sorted(src for src, _ in got.values())
    achieved = (len(outs) - 1) / max((outs[-1] - srcs[0]) / 1000, 1e-9)
    batches = mode.batches_between(started, ended)
    sizes = [b["size"] for b in batches]
    waits = [b.get("oldest_wait_ms", 0.0) for b in batches]
    infer = [b.get("process_ms", 0.0) for b in batches]
    row = {
        "mode": mode.name,
        "level": level,
        "offered_per_s": rate,
        "achieved_per_s": achieved,
        "received": len(got),
        "sent": n,
        "all": percentiles(list(latency.values())),
        "short": percentiles([v for k, v in latency.items() if not is_long(k)]),
        "long": percentiles([v for k, v in latency.items() if is_long(k)]),
        "batches": len(batches),
        "batch_size_median": statistics.median(sizes) if sizes else None,
        "batch_size_mean": statistics.mean(sizes) if sizes else None,
        "oldest_wait_ms_median": statistics.median(waits) if waits else None,
        "process_ms_median": statistics.median(infer) if infer else None,
        "load_average": load_before,
    }
    print(
        f"  {mode.name:<9} {int(level * 100):>3}% {rate:6.1f}/s -> {achieved:6.1f}/s  "
        f"p50/p99 {row['all']['p50']:6.0f}/{row['all']['p99']:6.0f} ms  "
        f"short {row['short']['p99']:6.0f} long {row['long']['p99']:6.0f}  "
        f"batch {row['batch_size_mean'] or 0:5.1f}  (load {load_before:.1f})",
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="0.1,0.3,0.6,0.9")
    parser.add_argument("--seconds", type=float, default=15.0, help="paced traffic per level and mode")
    parser.add_argument("--backlog", type=int, default=1500, help="tickets per saturation measurement")
    parser.add_argument("--modes", default="fixed,adaptive")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--logs", type=Path, default=None, help="keep the workers' logs here")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "latency_curve.json")
    args = parser.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    names = args.modes.split(",")

    bootstrap = os.environ.get("STREAMER_KAFKA_BOOTSTRAP") or local.start().bootstrap_servers
    run = uuid.uuid4().hex[:6]
    bundle = args.bundle or ensure_default_bundle(
        Settings(bundle_dir=REPO / "var" / "bundles" / "default"), progress=False
    )
    logs = args.logs or Path(f"/tmp/streamer-latency-curve-{run}")
    logs.mkdir(parents=True, exist_ok=True)
    modes = [Mode(name, bootstrap, run, bundle, logs) for name in names]
    started = time.monotonic()
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    sat: dict[str, list[dict[str, Any]]] = {m.name: [] for m in modes}
    try:
        for mode in modes:
            mode.start()
        for mode in modes:  # warm-up: model loaded, group joined, first batch compiled
            mode.send(tickets(ticket_texts(50, seed=5), f"{mode.run}W"))
        print("saturation, round 1", flush=True)
        for mode in modes:
            sat[mode.name].append(saturation(mode, args.backlog, "S1"))
        capacity = max(s[0]["tickets_per_s"] for s in sat.values())
        print(f"capacity {capacity:.1f} tickets/s (the higher of the modes)", flush=True)
        for i, level in enumerate(levels):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                rows.append(paced(mode, level, level * capacity, args.seconds, seed=20 + i))
        print("saturation, round 2", flush=True)
        for mode in modes[::-1]:
            sat[mode.name].append(saturation(mode, args.backlog, "S2"))
    finally:
        for mode in modes:
            mode.stop()

    saturation_mean = {name: statistics.mean(s["tickets_per_s"] for s in runs) for name, runs in sat.items()}
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"levels": levels, "seconds": args.seconds, "backlog": args.backlog, "modes": names},
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "capacity_per_s": capacity,
        "saturation": sat,
        "saturation_mean_per_s": saturation_mean,
        "rows": rows,
        "elapsed_s": time.monotonic() - started,
        "logs": str(logs),
    }

    print()
    print(
        f"{'mode':<9}{'load':>6}{'offered/s':>11}{'achieved/s':>11}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'short p50/p99':>15}{'long p50/p99':>15}{'batch':>7}{'wait ms':>9}{'machine load':>14}"
    )
    for r in rows:
        print(
            f"{r['mode']:<9}{int(r['level'] * 100):>5}%{r['offered_per_s']:>11.1f}{r['achieved_per_s']:>11.1f}"
            f"{r['all']['p50']:>8.0f}{r['all']['p99']:>8.0f}"
            f"{r['short']['p50']:>8.0f}/{r['short']['p99']:<6.0f}{r['long']['p50']:>8.0f}/{r['long']['p99']:<6.0f}"
            f"{r['batch_size_mean'] or 0:>7.1f}{r['oldest_wait_ms_median'] or 0:>9.0f}{r['load_average']:>14.1f}"
        )
    for name, runs in sat.items():
        figures = " / ".join(f"{s['tickets_per_s']:.1f}" for s in runs)
        print(f"{name:<9} saturation tickets/s {figures} (mean {saturation_mean[name]:.1f})")
    if "fixed" in saturation_mean and "adaptive" in saturation_mean:
        ratio = saturation_mean["adaptive"] / saturation_mean["fixed"]
        result["saturation_ratio_adaptive_to_fixed"] = ratio
        print(f"saturation adaptive / fixed: {ratio:.2f}")
    for level, target in TARGETS_P99_MS.items():
        for r in rows:
            if r["level"] == level:
                verdict = "met" if r["all"]["p99"] <= target else "missed"
                p99 = r["all"]["p99"]
                print(f"target p99 <= {target:.0f} ms at {int(level * 100)}%: {r['mode']} {p99:.0f} ms, {verdict}")
    print(f"load average start {load_start}, end {result['load_average_end']}; worker logs in {logs}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
