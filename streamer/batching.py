"""Adaptive micro-batching: how many buffered records the model takes next, and when to stop fetching.

Pure: no clock (the caller passes ``now``: wall-clock seconds, the clock of Kafka's record timestamps), no
I/O, no Kafka. The agent feeds every
record in as it arrives and asks for a batch whenever the model is free; this module decides its size.

Why not a fixed count with a timer (Faust's ``take_events(n, within)``): the timer starts when the previous
batch ends, so a lightly loaded worker holds each record for the rest of the previous batch's inference
plus the whole timer, with the model idle. Here a free model takes what is buffered at once: one record
when traffic is thin, a full budget under backlog, so latency is a batch's own inference time at low load
and throughput is the large-batch throughput when it matters.

Batches are budgeted in tokens, not records (TEI's ``--max-batch-tokens``): a long ticket costs the model
several short ones. Length bucketing stays inside the batch (the encoder sorts and splits by length).

Back-pressure with hysteresis: above ``pause_ratio`` budgets buffered, the partitions that feed the buffer
are paused; below ``resume_ratio`` budgets they are resumed (both marks grow to ``refill_s`` of the model's
work when that is more, so the model never idles while a resumed fetch restarts). Memory stays bounded
(twice the resume mark plus what was already fetched), a rebalance waits at most for the batch in the model
(the buffer is dropped, not drained), and no batch is predicted to run longer than ``max_batch_s`` (a
quarter of ``max.poll.interval.ms``), so the group never takes a paused worker for a stuck one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
P = TypeVar("P", bound=Hashable)

#: UTF-8 bytes per WordPiece token on support texts (BANKING77 and the demo tickets: measured 3.9-4.1).
BYTES_PER_TOKEN = 4


def estimate_tokens(text_bytes: int, *, max_tokens: int) -> int:
    """Tokens the encoder will see for a text of ``text_bytes`` UTF-8 bytes: ``bytes / 4`` plus [CLS] and
    [SEP], capped where the encoder truncates. Within 10-20% of the tokenizer's count on 80% of tickets,
    at no cost: the estimate only has to rank and budget batches, not to be exact."""
    return max(2, min(max_tokens, math.ceil(text_bytes / BYTES_PER_TOKEN) + 2))


@dataclass(frozen=True)
class BatchPolicy:
    """The knobs of the planner.

    Args:
        max_batch_tokens: most (estimated) tokens in one model call; a single longer record still goes
            alone (``STREAMER_BATCH_MAX_TOKENS``).
        latency_target_s: while the oldest buffered record is younger than this, a batch is cut to what the
            model is predicted to finish within this time; once records are older (a backlog), batches take
            the full budget for throughput (``STREAMER_LATENCY_TARGET_MS``).
        max_batch_s: no batch is predicted to run longer than this (a quarter of ``max.poll.interval.ms``).
        pause_ratio: pause fetching above this many budgets buffered (default 2).
        resume_ratio: resume below this many budgets buffered (default 1).
        cost_smoothing: weight of the newest batch in the model's tokens/s estimate (default 0.2).
        refill_s: how long a resumed partition may take to deliver records again (Faust looks at paused
            partitions once a second); the resume mark is at least this much of the model's work, so a
            backlog never leaves the model idle while fetching restarts (default 1.5).
    """

    max_batch_tokens: int = 2048
    latency_target_s: float = 0.1
    max_batch_s: float = 500.0
    pause_ratio: float = 2.0
    resume_ratio: float = 1.0
    cost_smoothing: float = 0.2
    refill_s: float = 1.5

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be positive")
        if not 0 < self.resume_ratio < self.pause_ratio:
            raise ValueError("need 0 < resume_ratio < pause_ratio (hysteresis)")
        if not 0 < self.cost_smoothing <= 1:
            raise ValueError("cost_smoothing must be in (0, 1]")
        if self.refill_s < 0:
            raise ValueError("refill_s must not be negative")


@dataclass(frozen=True, slots=True)
class Pending(Generic[T, P]):
    item: T
    tokens: int
    partition: P
    arrived: float


@dataclass(frozen=True)
class Batch(Generic[T, P]):
    """What the planner hands out: the records, their tokens, and partitions to resume now."""

    items: list[T]
    tokens: int
    resume: frozenset[P]
    oldest_wait_s: float


@dataclass
class BatchPlanner(Generic[T, P]):
    """Buffer of records waiting for the model, the size of the next batch, and which partitions to pause.

    Order: records leave in arrival order, so the order of each partition (and of each key) is kept.
    """

    policy: BatchPolicy = field(default_factory=BatchPolicy)
    _buffer: deque[Pending[T, P]] = field(default_factory=deque)
    _tokens: int = 0
    _by_partition: dict[P, int] = field(default_factory=dict)
    _paused: set[P] = field(default_factory=set)
    #: Smoothed model speed in tokens per second; ``None`` until a batch was observed.
    tokens_per_s: float | None = None

    # -- state ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def buffered_tokens(self) -> int:
        return self._tokens

    @property
    def paused(self) -> frozenset[P]:
        return frozenset(self._paused)

    @property
    def resume_below(self) -> float:
        """Resume fetching below this many buffered tokens: a budget, or ``refill_s`` of model work if more."""
        mark = self.policy.resume_ratio * self.policy.max_batch_tokens
        if self.tokens_per_s is not None:
            mark = max(mark, self.tokens_per_s * self.policy.refill_s)
        return mark

    @property
    def pause_above(self) -> float:
        """Pause fetching above this many buffered tokens (``pause_ratio / resume_ratio`` times the resume mark)."""
        return self.resume_below * self.policy.pause_ratio / self.policy.resume_ratio

    # -- input ---------------------------------------------------------------------------------------------
    def add(self, item: T, tokens: int, partition: P, now: float, since: float | None = None) -> frozenset[P]:
        """Buffer one record; returns the partitions to pause now (empty while below the high mark).

        ``since`` is when the record was produced, on the same clock as ``now`` (its Kafka timestamp): a
        record that waited in the topic counts as late at once, so a backlog gets full batches from its
        first record on. Without it (or from a clock ahead of ours) the record counts from ``now``.

        Once above the mark, every partition holding buffered records is paused, and so is the partition
        of each record that still arrives (fetched before its pause took effect, or resumed by a rebalance):
        pausing twice is harmless, fetching on is not.
        """
        tokens = max(1, tokens)
        arrived = since if since is not None and since < now else now
        self._buffer.append(Pending(item, tokens, partition, arrived))
        self._tokens += tokens
        self._by_partition[partition] = self._by_partition.get(partition, 0) + tokens
        if self._tokens <= self.pause_above:
            return frozenset()
        if self._paused:
            self._paused.add(partition)
            return frozenset((partition,))
        self._paused.update(self._by_partition)
        return frozenset(self._by_partition)

    def clear(self) -> list[T]:
        """Forget every buffered record (partitions revoked: their next owner reads them again)."""
        dropped = [p.item for p in self._buffer]
        self._buffer.clear()
        self._tokens = 0
        self._by_partition.clear()
        self._paused.clear()
        return dropped

    # -- output --------------------------------------------------------------------------------------------
    def budget(self, now: float) -> int:
        """Tokens the next batch may hold if taken at ``now``."""
        if not self._buffer:
            return 0
        cap = self.policy.max_batch_tokens
        rate = self.tokens_per_s
        if rate is not None:
            cap = min(cap, int(rate * self.policy.max_batch_s))
            if now - self._buffer[0].arrived < self.policy.latency_target_s:
                # Keeping up: no batch runs longer than the target, so none holds the records behind it for
                # longer. Behind (the oldest record is past the target): the full budget, for throughput.
                cap = min(cap, int(rate * self.policy.latency_target_s))
        return max(cap, 1)

    def take(self, now: float) -> Batch[T, P]:
        """The next batch, oldest first, within ``budget(now)`` (never empty while anything is buffered)."""
        cap = self.budget(now)
        items: list[T] = []
        tokens = 0
        oldest = now - self._buffer[0].arrived if self._buffer else 0.0
        while self._buffer and (not items or tokens + self._buffer[0].tokens <= cap):
            pending = self._buffer.popleft()
            items.append(pending.item)
            tokens += pending.tokens
            left = self._by_partition[pending.partition] - pending.tokens
            if left:
                self._by_partition[pending.partition] = left
            else:
                del self._by_partition[pending.partition]
        self._tokens -= tokens
        resume: frozenset[P] = frozenset()
        if self._paused and self._tokens < self.resume_below:
            resume = frozenset(self._paused)
            self._paused.clear()
        return Batch(items, tokens, resume, oldest)

    def observe(self, tokens: int, seconds: float) -> None:
        """Feed back one model call: ``tokens`` (as budgeted) took ``seconds``; updates the speed estimate."""
        if tokens <= 0 or seconds <= 0:
            return
        rate = tokens / seconds
        a = self.policy.cost_smoothing
        self.tokens_per_s = rate if self.tokens_per_s is None else (1 - a) * self.tokens_per_s + a * rate

    def forget(self, partitions: Iterable[P]) -> None:
        """Partitions no longer ours are no longer paused by us."""
        self._paused.difference_update(partitions)
