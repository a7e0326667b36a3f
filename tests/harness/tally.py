"""An output tally: a background reader counting, per key (= input id), what came out on which topic, and when.

Inputs are keyed by their id and every output (enriched record or dead letter) keeps the input's key, so the
tally can say which inputs have an output, how many copies, and when each was produced, while a worker is
killed, a broker restarted or a group rebalanced.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from .kafka import Topics
from .processes import StreamerProcess


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

    def __init__(self, cluster: Topics, topics: Iterable[str], keep: Iterable[str] = ()) -> None:
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
        alive: Iterable[StreamerProcess] = (),
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
