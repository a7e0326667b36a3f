"""Shared helpers of the fault suite: topics behind a unique prefix, worker processes, an output tally.

Every test here runs ``python -m streamer worker --only tickets`` as a real process (so it can be killed
with SIGKILL) against a real broker: the session broker (``kafka_bootstrap``) where the fault is in the
worker, a broker of the test's own (temporary data dir, free port) where the fault is the broker.

Inputs are keyed by their id, and every output (enriched record or dead letter) keeps the input's key, so
a background consumer (``Tally``) can count, per input, what came out, and when.

Test modules import the helpers from here (``from .conftest import ...``: ``tests/faults`` is a package).
Sizes can be set from the environment (``STREAMER_FAULTS_*``, see each test); ``STREAMER_FAULTS_SEED``
fixes the random kill points and generated inputs (the seed used is printed either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.kafka.admin import apply_topics
from streamer.settings import Settings
from streamer.topics import load_catalog

REPO = Path(__file__).resolve().parents[2]
TICKETS = "support.tickets.v1"
ENRICHED = "support.tickets.enriched.v1"
DEADLETTER = "streamer.deadletter.v1"
ESCALATIONS = "llm.escalations.v1"

#: Faust's own settings read from the environment. Its default session timeout (60 s) is how long a
#: SIGKILLed member keeps its partitions before the group gives them to someone else; the suite uses 10 s
#: so that five kills fit in its time budget (a deployment setting, not a correctness one).
FAUST_ENV = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}


def env_int(name: str, default: int) -> int:
    """``STREAMER_FAULTS_<name>`` from the environment, else ``default``."""
    value = os.environ.get(f"STREAMER_FAULTS_{name}")
    return int(value) if value else default


def report(title: str, numbers: dict[str, Any]) -> None:
    """Print a test's measured numbers (visible with ``-s``, and in the report of a failing test)."""
    width = max(len(k) for k in numbers)
    lines = [f"== {title} =="] + [f"  {k:<{width}}  {v}" for k, v in numbers.items()]
    print("\n" + "\n".join(lines), flush=True)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded random generator; the seed is ``STREAMER_FAULTS_SEED`` or a fresh one, printed."""
    seed = env_int("SEED", random.SystemRandom().randrange(1 << 30))
    print(f"\n{request.node.name}: STREAMER_FAULTS_SEED={seed}", flush=True)
    return random.Random(seed)


# ------------------------------------------------------------------------------------------- topics


@dataclass
class Cluster:
    """Every declared topic behind a unique prefix on one broker, and a fast producer for inputs."""

    bootstrap: str
    prefix: str
    client: dict[str, Any] = field(default_factory=dict)  # extra aiokafka options (security)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def apply(self) -> None:
        settings = Settings(kafka_bootstrap=self.bootstrap, topic_prefix=self.prefix, topics_dir=REPO / "topics")
        catalog = load_catalog(settings.topics_file)
        asyncio.run(apply_topics(settings, catalog.topics.values()))

    def produce(self, records: Iterable[tuple[bytes | None, bytes | None]], topic: str = TICKETS) -> int:
        """Send keyed records (values may be ``None``: tombstones); waits for every acknowledgement."""

        async def go() -> int:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                linger_ms=20,
                max_request_size=15 * 1024 * 1024,
                max_batch_size=1024 * 1024,
                acks="all",
                **self.client,
            )
            await producer.start()
            sent = 0
            try:
                pending = []
                for key, value in records:
                    pending.append(await producer.send(self.topic(topic), value, key=key))
                    sent += 1
                    if len(pending) >= 2000:
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
            finally:
                await producer.stop()
            return sent

        return asyncio.run(go())


def make_cluster(bootstrap: str, label: str) -> Cluster:
    cluster = Cluster(bootstrap, f"t.faults.{label}.{uuid.uuid4().hex[:8]}.")
    cluster.apply()
    return cluster


# ------------------------------------------------------------------------------------------- output tally


@dataclass
class Seen:
    """One output record as the tally saw it."""

    topic: str
    key: bytes | None
    timestamp_ms: int
    value: dict[str, Any] | None


class Tally:
    """Reads output topics from the beginning in a thread and counts records per key (= input id).

    ``keep`` names the topics whose decoded values are kept (the others are counted, not stored).
    The consumer has no group: it does not disturb the workers and survives broker restarts.
    """

    def __init__(self, cluster: Cluster, topics: Iterable[str], keep: Iterable[str] = ()) -> None:
        self.cluster = cluster
        self.topics = list(topics)
        self.keep = set(keep)
        self.counts: dict[str, Counter[bytes | None]] = {t: Counter() for t in self.topics}
        self.timestamps: dict[str, list[int]] = {t: [] for t in self.topics}
        self.stamps: dict[str, dict[bytes | None, list[int]]] = {t: {} for t in self.topics}
        self.values: dict[str, list[Seen]] = {t: [] for t in self.topics}
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tally", daemon=True)

    def __enter__(self) -> Tally:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"tally consumer did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.cluster.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **self.cluster.client,
        )
        await consumer.start()
        try:
            parts: list[TopicPartition] = []
            for name in self.topics:
                full = self.cluster.topic(name)
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(full) or set()
                parts.extend(TopicPartition(full, p) for p in sorted(partitions))
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            self._ready.set()
            short = {self.cluster.topic(t): t for t in self.topics}
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                with self._lock:
                    for tp, messages in batches.items():
                        name = short[tp.topic]
                        for m in messages:
                            self.counts[name][m.key] += 1
                            self.timestamps[name].append(m.timestamp)
                            self.stamps[name].setdefault(m.key, []).append(m.timestamp)
                            if name in self.keep:
                                value = orjson.loads(m.value) if m.value is not None else None
                                self.values[name].append(Seen(name, m.key, m.timestamp, value))
        finally:
            await consumer.stop()

    def keys(self, *topics: str) -> set[bytes | None]:
        with self._lock:
            return {k for t in topics or self.topics for k in self.counts[t]}

    def covered(self, expected: set[bytes], *topics: str) -> int:
        """How many of ``expected`` keys have at least one output in ``topics`` (default: all)."""
        seen = self.keys(*topics)
        return sum(1 for k in expected if k in seen)

    def total(self, topic: str) -> int:
        with self._lock:
            return sum(self.counts[topic].values())

    def snapshot(self, topic: str) -> tuple[Counter[bytes | None], list[int], list[Seen]]:
        with self._lock:
            return Counter(self.counts[topic]), list(self.timestamps[topic]), list(self.values[topic])

    def duplicate_stamps(self, topic: str) -> list[int]:
        """Timestamps of every copy after the first, per key: when each duplicate was produced."""
        with self._lock:
            return sorted(t for stamps in self.stamps[topic].values() for t in sorted(stamps)[1:])

    def wait(
        self,
        done: Callable[[], bool],
        timeout: float,
        *,
        alive: Iterable[WorkerProcess] = (),
        what: str = "outputs",
    ) -> float:
        """Poll until ``done()``; fail on timeout, on a dead tally, or when a worker in ``alive`` exits."""
        began = time.monotonic()
        watched = list(alive)
        while not done():
            if self.error is not None:
                raise AssertionError(f"tally consumer failed: {self.error!r}")
            for worker in watched:
                if not worker.alive:
                    raise AssertionError(f"worker {worker.name} exited ({worker.returncode}):\n{worker.log_tail()}")
            if time.monotonic() - began > timeout:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)
        return time.monotonic() - began


def max_gap_s(timestamps_ms: list[int]) -> float:
    """Longest pause between consecutive output timestamps, in seconds."""
    ts = sorted(timestamps_ms)
    return max((b - a for a, b in itertools.pairwise(ts)), default=0) / 1000


# ------------------------------------------------------------------------------------------- workers


class WorkerProcess:
    """``python -m streamer worker --only tickets`` (or other ``args``) with its own log file (stdout and stderr)."""

    def __init__(
        self,
        name: str,
        cluster: Cluster,
        bundle: Path,
        workdir: Path,
        *,
        group: str,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("worker", "--only", "tickets"),
    ) -> None:
        self.name = name
        self.args = args
        self.workdir = workdir
        (workdir / "var").mkdir(parents=True, exist_ok=True)  # Faust makes var/faust, not its parents
        self.env = {
            **os.environ,
            **FAUST_ENV,
            "STREAMER_KAFKA_BOOTSTRAP": cluster.bootstrap,
            "STREAMER_TOPIC_PREFIX": cluster.prefix,
            "STREAMER_TOPICS_DIR": str(REPO / "topics"),
            "STREAMER_GROUP_ID": group,
            "STREAMER_BUNDLE_DIR": str(bundle),
            "STREAMER_LOG_FORMAT": "json",
            "STREAMER_LOG_LEVEL": "INFO",
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_SHUTDOWN_TIMEOUT_S": "20",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0
        self.log_path = workdir / f"{name}.log"
        self.peak_rss_kb = 0

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            # cwd: Faust's data dir (var/faust) of its own, never the checkout's.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer", *self.args],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=log,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def sample_rss(self) -> int:
        """Peak resident memory (VmHWM, KiB) of the running process, remembered across samples."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{self.proc.pid}/status").read_text()
                match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
                if match:
                    self.peak_rss_kb = max(self.peak_rss_kb, int(match.group(1)))
        return self.peak_rss_kb

    def kill9(self) -> None:
        assert self.proc is not None
        self.sample_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait (SIGKILL past ``timeout``); the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode or 0
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Workers a test starts are registered here and stopped at its end, whatever happened."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        code = worker.terminate()
        if code not in (0, -signal.SIGTERM, -signal.SIGKILL, None):
            print(f"worker {worker.name} exited {code}:\n{worker.log_tail()}")


def ticket_records(tickets: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, bytes]]:
    for t in tickets:
        yield t["id"].encode(), orjson.dumps(t)
