"""Every Prometheus metric of a worker process, on a registry of its own, and what fills them per batch.

Every metric lives on a registry of its own (``Metrics.registry``), never on prometheus-client's global
one, so that tests and tools can build several workers in one process. Names follow Prometheus
conventions with the prefix ``streamer_``; topic labels carry the declared topic name (without
``STREAMER_TOPIC_PREFIX``) so that dashboards work the same in every environment.

Both processing paths are counted by one ``record_batch`` from the one result type they return
(``streamer.pipeline.Batch``). Series whose topic label does not tell the paths apart (both produce to
``llm.escalations.v1`` and the dead-letter topic; both have batches, latency and escalation reasons)
carry a ``path`` label, ``tickets`` or ``logs``; consumer lag carries the consumer ``group``.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Iterable, Set
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from streamer.pipeline import Batch

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "ESCALATION_WINDOW",
    "INFERENCE_BUCKETS",
    "LATENCY_BUCKETS",
    "NAMESPACE",
    "BatchBuffer",
    "Metrics",
    "exported_names",
]

NAMESPACE = "streamer"

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Tickets over which ``streamer_escalation_rate`` is measured (the most recent ones).
ESCALATION_WINDOW = 1000
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Sample name suffixes prometheus-client writes for each metric type.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
}


class BatchBuffer(Protocol):
    """What the batch gauges read from a worker's buffer (``streamer.batching.BatchPlanner``) at scrape time."""

    def __len__(self) -> int: ...

    @property
    def buffered_tokens(self) -> int: ...

    @property
    def paused(self) -> Set[object]: ...

    tokens_per_s: float | None


class _PathSeries:
    """The label-free children of one path's series, looked up once: a log batch of 2,000 lines then costs
    one ``observe`` per line for latency and no label lookup per line."""

    __slots__ = ("batch_size", "deduplicated", "end_to_end", "inference")

    def __init__(self, metrics: Metrics, path: str) -> None:
        self.batch_size = metrics.batch_size.labels(path=path)
        self.inference = metrics.inference_seconds.labels(path=path)
        self.end_to_end = metrics.end_to_end_seconds.labels(path=path)
        self.deduplicated = metrics.escalations_deduplicated.labels(path=path)


class Metrics:
    """Every metric a worker exports; ``record_batch`` is both paths' ``on_batch`` hook.

    Args:
        topic_prefix: stripped from consumed topic names for the ``topic`` label (default: none).
        registry: where the metrics live (default: a new ``CollectorRegistry``).
        clock: wall clock for end-to-end latency (default ``time.time``; record timestamps are wall time).
        process: also export ``streamer_process_*`` (CPU, memory, start time) where ``/proc`` exists, and
            ``streamer_gc_*`` (the cyclic collector's work).
    """

    def __init__(
        self,
        *,
        topic_prefix: str = "",
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        process: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.topic_prefix = topic_prefix
        self._clock = clock
        self._lag_series: set[tuple[str, str, str]] = set()
        self._paths: dict[str, _PathSeries] = {}
        r = self.registry
        self.events_in = Counter(
            "streamer_events_in",
            "Records consumed, per source topic (support.tickets.v1: the ticket path; ops.logs.v1: the log path).",
            ["topic"],
            registry=r,
        )
        self.outputs = Counter(
            "streamer_outputs",
            "Output records acknowledged by the brokers, per path and destination topic.",
            ["path", "topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamer_dead_letters",
            "Records sent to the dead-letter topic, per path and error code.",
            ["path", "reason"],
            registry=r,
        )
        self.escalations = Counter(
            "streamer_escalations",
            "Escalation reasons given, per path (a record with two reasons counts in both).",
            ["path", "reason"],
            registry=r,
        )
        self.escalation_rate = Gauge(
            "streamer_escalation_rate",
            f"Ticket path only: share of the last {ESCALATION_WINDOW} tickets escalated for the intent model's "
            "doubt (low confidence, out of scope, small margin): what the escalation budget spends.",
            registry=r,
        )
        self.escalation_budget = Gauge(
            "streamer_escalation_budget",
            "Ticket path only: the escalation rate the worker is set to spend (the bundle's budget or "
            "STREAMER_ESCALATE_RATE; 0 without one).",
            registry=r,
        )
        self.escalation_threshold = Gauge(
            "streamer_escalation_threshold",
            "Ticket path only: the escalation score the next batch escalates at; below the calibrated one while "
            "traffic calmer than calibration leaves budget unused (STREAMER_ESCALATE_SPEND_WINDOW); 0 without a "
            "budget.",
            registry=r,
        )
        self.escalations_deduplicated = Counter(
            "streamer_escalations_deduplicated",
            "Escalations not sent because they near-duplicate one sent earlier in the window, per path.",
            ["path"],
            registry=r,
        )
        self.shadow_decisions = Counter(
            "streamer_shadow_decisions",
            "Ticket path only: decisions of the shadow bundle per head (intent, priority, sentiment, escalate), "
            "live label and whether the shadow agreed.",
            ["head", "label", "agreement"],
            registry=r,
        )
        self.log_alerts = Counter(
            "streamer_log_alerts",
            "Log path: alerts raised to ops.alerts.v1, per kind (error burst, new error template...).",
            ["kind"],
            registry=r,
        )
        self.log_templates_published = Counter(
            "streamer_log_templates_published",
            "Log path: new or changed templates published to ops.log_templates.v1.",
            registry=r,
        )
        self.log_templates_classified = Counter(
            "streamer_log_templates_classified",
            "Log path: templates the incident model classified (it runs per template, never per line).",
            registry=r,
        )
        self._escalation_window: deque[tuple[int, int]] = deque()
        self._window_sums = [0, 0]
        self.batch_size = Histogram(
            "streamer_batch_size",
            "Records per batch, per path (a model batch of tickets; one fetch of log lines).",
            ["path"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "streamer_inference_seconds",
            "Time the model and the triage core took for one batch, per path.",
            ["path"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "streamer_end_to_end_latency_seconds",
            "From the source record's timestamp to the acknowledgement of its outputs, per path.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.buffered_records = Gauge(
            "streamer_buffered_records",
            "Records fetched and waiting for the model, per path (adaptive batching; bounded by back-pressure).",
            ["path"],
            registry=r,
        )
        self.buffered_tokens = Gauge(
            "streamer_buffered_tokens",
            "Estimated tokens of the records waiting for the model, per path: what the batch budget and the "
            "pause/resume marks are counted in.",
            ["path"],
            registry=r,
        )
        self.paused_partitions = Gauge(
            "streamer_paused_partitions",
            "Partitions whose fetching is paused because inference is behind, per path (back-pressure).",
            ["path"],
            registry=r,
        )
        self.model_tokens_per_second = Gauge(
            "streamer_model_tokens_per_second",
            "The batcher's smoothed estimate of the model's speed, per path (0 before the first batch): "
            "batches are sized from it.",
            ["path"],
            registry=r,
        )
        self.model_info = Gauge(
            "streamer_model_info",
            "The loaded model bundle (always 1; the labels say which).",
            ["bundle", "version", "device", "compute_type"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamer_consumer_lag",
            "Records behind: log end offset minus the group's committed offset, per consumer group and "
            "partition this worker owns (<group> for tickets, <group>-logs for logs).",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.partitions_assigned = Gauge(
            "streamer_partitions_assigned",
            "Partitions assigned to this worker, per consumer group and the path it serves.",
            ["group", "path"],
            registry=r,
        )
        self.ready = Gauge("streamer_ready", "1 while /ready answers 200, else 0.", registry=r)
        self.start_time = Gauge(
            "streamer_start_time_seconds", "When this worker process started (Unix time).", registry=r
        )
        self.start_time.set(clock())
        if process:
            ProcessCollector(namespace=NAMESPACE, registry=r)
            r.register(_CollectorStats())

    def topic_label(self, topic: str) -> str:
        """The declared topic name of a cluster topic name (the prefix removed)."""
        if self.topic_prefix and topic.startswith(self.topic_prefix):
            return topic[len(self.topic_prefix) :]
        return topic

    def set_model(self, bundle: str, version: str, device: str = "", compute_type: str = "") -> None:
        self.model_info.clear()
        self.model_info.labels(bundle=bundle, version=version, device=device, compute_type=compute_type).set(1)

    def _series(self, path: str) -> _PathSeries:
        found = self._paths.get(path)
        if found is None:
            found = self._paths[path] = _PathSeries(self, path)
        return found

    def record_batch(self, batch: Batch) -> None:
        """Count one batch of either path whose outputs the brokers have acknowledged.

        Everything is aggregated per batch before it reaches a labelled series; only the end-to-end
        latency is observed per record (from the timestamps the batch carries).
        """
        now = self._clock()
        path = batch.path
        series = self._series(path)
        for topic, n in batch.events_in.items():
            self.events_in.labels(topic=self.topic_label(topic)).inc(n)
        for topic, n in batch.output_counts().items():
            self.outputs.labels(path=path, topic=topic).inc(n)
        for reason, n in batch.dead_letters.items():
            self.dead_letters.labels(path=path, reason=reason).inc(n)
        for reason, n in batch.escalations.items():
            self.escalations.labels(path=path, reason=reason).inc(n)
        if batch.deduplicated:
            series.deduplicated.inc(batch.deduplicated)
        if path == "tickets":
            self._observe_escalations(batch.processed, batch.model_escalated)
        for (head, label, agreed), n in batch.shadow_agreement.items():
            self.shadow_decisions.labels(head=head, label=label, agreement="agree" if agreed else "disagree").inc(n)
        for kind, n in batch.alerts.items():
            self.log_alerts.labels(kind=kind).inc(n)
        if batch.templates:
            self.log_templates_published.inc(batch.templates)
        if batch.classified:
            self.log_templates_classified.inc(batch.classified)
        if batch.size:  # a log batch that only releases records held back from the last one takes none
            series.batch_size.observe(batch.size)
            series.inference.observe(batch.inference_s)
        observe = series.end_to_end.observe
        for ts_ms in batch.source_timestamps_ms:
            observe(max(now - ts_ms / 1000, 0.0))

    def watch_buffer(self, path: str, buffer: BatchBuffer) -> None:
        """Export ``buffer``'s state as gauges read at scrape time (nothing to update per record)."""
        self.buffered_records.labels(path=path).set_function(lambda: len(buffer))
        self.buffered_tokens.labels(path=path).set_function(lambda: buffer.buffered_tokens)
        self.paused_partitions.labels(path=path).set_function(lambda: len(buffer.paused))
        self.model_tokens_per_second.labels(path=path).set_function(lambda: buffer.tokens_per_s or 0.0)

    def set_escalation_budget(self, rate: float | None) -> None:
        self.escalation_budget.set(rate or 0.0)

    def watch_escalation_threshold(self, threshold: Callable[[], float | None]) -> None:
        """Export the score threshold the ticket path escalates at, read at scrape time."""
        self.escalation_threshold.set_function(lambda: threshold() or 0.0)

    def _observe_escalations(self, tickets: int, escalated: int) -> None:
        """Slide the window of recent tickets; whole batches leave it once newer ones fill it."""
        if tickets <= 0:
            return
        self._escalation_window.append((tickets, escalated))
        self._window_sums[0] += tickets
        self._window_sums[1] += escalated
        while len(self._escalation_window) > 1 and self._window_sums[0] - self._escalation_window[0][0] >= (
            ESCALATION_WINDOW
        ):
            old_tickets, old_escalated = self._escalation_window.popleft()
            self._window_sums[0] -= old_tickets
            self._window_sums[1] -= old_escalated
        self.escalation_rate.set(self._window_sums[1] / self._window_sums[0])

    def set_assignment(self, group: str, path: str, partitions: Iterable[tuple[str, int]]) -> None:
        """The partitions this worker owns now in ``group``; that group's lag series of the others are dropped."""
        owned = {(group, self.topic_label(t), str(p)) for t, p in partitions}
        self.partitions_assigned.labels(group=group, path=path).set(len(owned))
        for labels in {s for s in self._lag_series if s[0] == group} - owned:
            self.consumer_lag.remove(*labels)
            self._lag_series.discard(labels)

    def set_lag(self, group: str, topic: str, partition: int, lag: int) -> None:
        labels = (group, self.topic_label(topic), str(partition))
        self.consumer_lag.labels(*labels).set(lag)
        self._lag_series.add(labels)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _CollectorStats(Collector):
    """Python's cyclic collector, read at scrape time: collections per generation and the frozen heap.

    prometheus_client's ``GCCollector`` writes ``python_gc_*``; these keep the ``streamer_`` namespace. A
    worker fits the collector to its heap at start-up (``streamer.runtime.tune_garbage_collector``) and
    then collects rarely: a steady climb of collections means it walks live batches again.
    """

    def collect(self) -> Iterable[Metric]:
        collections = CounterMetricFamily(
            f"{NAMESPACE}_gc_collections",
            "Collections of each generation of the cyclic collector.",
            labels=["generation"],
        )
        collected = CounterMetricFamily(
            f"{NAMESPACE}_gc_objects_collected",
            "Objects the cyclic collector freed, per generation.",
            labels=["generation"],
        )
        for generation, stats in enumerate(gc.get_stats()):
            collections.add_metric([str(generation)], stats["collections"])
            collected.add_metric([str(generation)], stats["collected"])
        frozen = GaugeMetricFamily(
            f"{NAMESPACE}_gc_frozen_objects",
            "Objects frozen out of the collector's walks at start-up.",
            value=gc.get_freeze_count(),
        )
        return [collections, collected, frozen]


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can write (``_total``, ``_bucket``... included), even before any sample."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names
