"""Prometheus metrics of a worker process and its operations endpoints: ``/metrics``, ``/health``, ``/ready``.

Every metric lives on a registry of its own (``Metrics.registry``), never on prometheus-client's global
one, so that tests and tools can build several workers in one process. Names follow Prometheus
conventions with the prefix ``streamer_``; topic labels carry the declared topic name (without
``STREAMER_TOPIC_PREFIX``) so that dashboards work the same in every environment.

``OpsService`` runs inside the worker's event loop (a ``mode.Service`` started before the Faust app and
stopped after it): an aiohttp server on ``STREAMER_METRICS_HOST:STREAMER_METRICS_PORT`` and a poller that
measures consumer lag every ``lag_interval_s`` (5 s) with one small side consumer of its own. That
consumer never subscribes, so it never joins the group: it asks the brokers for the log end offsets and
the group's committed offsets of the partitions this worker owns. A successful round trip is also what
``/ready`` takes as proof that the brokers are reachable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiokafka import TopicPartition
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from streamer.errors import ConfigError
from streamer.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from streamer.pipeline.batch import Batch

log = structlog.get_logger(__name__)

NAMESPACE = "streamer"
#: Seconds between two consumer-lag measurements (one ListOffsets and one OffsetFetch per partition).
LAG_INTERVAL_S = 5.0
#: ``/ready`` fails when the last successful broker round trip is older than this.
BROKER_STALE_S = 30.0

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
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


class Metrics:
    """Every metric a worker exports; ``record_batch`` is the ticket agent's ``on_batch`` hook.

    Args:
        topic_prefix: stripped from consumed topic names for the ``topic`` label (default: none).
        registry: where the metrics live (default: a new ``CollectorRegistry``).
        clock: wall clock for end-to-end latency (default ``time.time``; record timestamps are wall time).
        process: also export ``streamer_process_*`` (CPU, memory, start time) where ``/proc`` exists.
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
        self._lag_series: set[tuple[str, str]] = set()
        r = self.registry
        self.events_in = Counter("streamer_events_in", "Records consumed, per source topic.", ["topic"], registry=r)
        self.outputs = Counter(
            "streamer_outputs",
            "Output records acknowledged by the brokers, per destination topic.",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamer_dead_letters", "Records sent to the dead-letter topic, per error code.", ["reason"], registry=r
        )
        self.escalations = Counter(
            "streamer_escalations",
            "Escalation reasons given (a ticket with two reasons counts in both).",
            ["reason"],
            registry=r,
        )
        self.escalation_rate = Gauge(
            "streamer_escalation_rate",
            f"Share of the last {ESCALATION_WINDOW} tickets escalated for the intent model's doubt "
            "(low confidence, out of scope, small margin): what the escalation budget spends.",
            registry=r,
        )
        self.escalation_budget = Gauge(
            "streamer_escalation_budget",
            "The escalation rate the worker is set to spend (the bundle's budget or STREAMER_ESCALATE_RATE; "
            "0 without one).",
            registry=r,
        )
        self.escalations_deduplicated = Counter(
            "streamer_escalations_deduplicated",
            "Escalations not sent because they near-duplicate one sent earlier in the window.",
            registry=r,
        )
        self.shadow_decisions = Counter(
            "streamer_shadow_decisions",
            "Decisions of the shadow bundle per head (intent, priority, sentiment, escalate), live label and "
            "whether the shadow agreed.",
            ["head", "label", "agreement"],
            registry=r,
        )
        self._escalation_window: deque[tuple[int, int]] = deque()
        self._window_sums = [0, 0]
        self.batch_size = Histogram(
            "streamer_batch_size", "Records per model batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "streamer_inference_seconds",
            "Time the model and the triage core took for one batch.",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "streamer_end_to_end_latency_seconds",
            "From the source record's timestamp to the acknowledgement of its outputs.",
            buckets=LATENCY_BUCKETS,
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
            "Records behind: log end offset minus the group's committed offset, per partition this worker owns.",
            ["topic", "partition"],
            registry=r,
        )
        self.partitions_assigned = Gauge(
            "streamer_partitions_assigned", "Partitions assigned to this worker.", registry=r
        )
        self.ready = Gauge("streamer_ready", "1 while /ready answers 200, else 0.", registry=r)
        self.start_time = Gauge(
            "streamer_start_time_seconds", "When this worker process started (Unix time).", registry=r
        )
        self.start_time.set(clock())
        if process:
            ProcessCollector(namespace=NAMESPACE, registry=r)

    def topic_label(self, topic: str) -> str:
        """The declared topic name of a cluster topic name (the prefix removed)."""
        if self.topic_prefix and topic.startswith(self.topic_prefix):
            return topic[len(self.topic_prefix) :]
        return topic

    def set_model(self, bundle: str, version: str, device: str = "", compute_type: str = "") -> None:
        self.model_info.clear()
        self.model_info.labels(bundle=bundle, version=version, device=device, compute_type=compute_type).set(1)

    def record_batch(self, result: Batch) -> None:
        """Count one batch whose outputs the brokers have acknowledged."""
        now = self._clock()
        for topic, n in result.events_in.items():
            self.events_in.labels(topic=self.topic_label(topic)).inc(n)
        for topic, n in Tally(out.topic for out in result.outputs).items():
            self.outputs.labels(topic=topic).inc(n)
        for reason, n in result.dead_letters.items():
            self.dead_letters.labels(reason=reason).inc(n)
        for reason, n in result.escalations.items():
            self.escalations.labels(reason=reason).inc(n)
        if result.path == "tickets":  # the escalation budget is spent on tickets only
            self._observe_escalations(result.processed, result.model_escalated)
        self.escalations_deduplicated.inc(result.deduplicated)
        for (head, label, agreed), n in result.shadow_agreement.items():
            self.shadow_decisions.labels(head=head, label=label, agreement="agree" if agreed else "disagree").inc(n)
        self.batch_size.observe(result.size)
        self.inference_seconds.observe(result.inference_s)
        for ts_ms in result.source_timestamps_ms:
            self.end_to_end_seconds.observe(max(now - ts_ms / 1000, 0.0))

    def set_escalation_budget(self, rate: float | None) -> None:
        self.escalation_budget.set(rate or 0.0)

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

    def set_assignment(self, partitions: Iterable[tuple[str, int]]) -> None:
        """The partitions this worker owns now; lag series of the others are dropped."""
        owned = {(self.topic_label(t), str(p)) for t, p in partitions}
        self.partitions_assigned.set(len(owned))
        for labels in self._lag_series - owned:
            self.consumer_lag.remove(*labels)
        self._lag_series &= owned

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        labels = (self.topic_label(topic), str(partition))
        self.consumer_lag.labels(*labels).set(lag)
        self._lag_series.add(labels)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can write (``_total``, ``_bucket``... included), even before any sample."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@dataclass
class Readiness:
    """What ``/ready`` checks: a loaded model, assigned partitions, a recent broker round trip, no shutdown.

    Args:
        broker_stale_s: a broker round trip older than this fails the check (default 30 s).
        clock: monotonic clock (default ``time.monotonic``).
    """

    broker_stale_s: float = BROKER_STALE_S
    clock: Callable[[], float] = time.monotonic
    model: str | None = None
    assigned: set[tuple[str, int]] = field(default_factory=set)
    last_broker_contact: float | None = None
    stopping: bool = False

    def broker_seen(self) -> None:
        self.last_broker_contact = self.clock()

    def checks(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        age = None if self.last_broker_contact is None else now - self.last_broker_contact
        broker_ok = age is not None and age <= self.broker_stale_s
        return {
            "model": {"ok": self.model is not None, "detail": self.model or "model not loaded"},
            "assignment": {
                "ok": bool(self.assigned),
                "detail": f"{len(self.assigned)} partition(s) assigned" if self.assigned else "no partitions assigned",
            },
            "broker": {
                "ok": broker_ok,
                "detail": (
                    "no successful broker round trip yet"
                    if age is None
                    else f"last successful broker round trip {age:.1f} s ago (limit {self.broker_stale_s:.0f} s)"
                ),
            },
            "shutdown": {"ok": not self.stopping, "detail": "shutting down" if self.stopping else "running"},
        }

    def is_ready(self) -> bool:
        return all(check["ok"] for check in self.checks().values())


def ops_routes(metrics: Metrics, readiness: Readiness) -> web.Application:
    """The aiohttp application: ``/metrics``, ``/health`` (the loop answers) and ``/ready`` (JSON checks)."""

    async def metrics_handler(request: web.Request) -> web.Response:
        metrics.ready.set(1 if readiness.is_ready() else 0)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        checks = readiness.checks()
        ok = all(c["ok"] for c in checks.values())
        metrics.ready.set(1 if ok else 0)
        failing = [name for name, c in checks.items() if not c["ok"]]
        body = {"status": "ready" if ok else "not ready", "failing": failing, "checks": checks}
        return web.json_response(body, status=200 if ok else 503)

    application = web.Application()
    application.router.add_get("/metrics", metrics_handler)
    application.router.add_get("/health", health)
    application.router.add_get("/ready", ready)
    return application


class LagProbe:
    """Log end and committed offsets of the partitions this worker owns, from a side consumer of its own.

    The consumer carries the group id (committed offsets are asked per group) but never subscribes, so it
    never joins the group or takes part in its rebalances.
    """

    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer]) -> None:
        self._make_consumer = make_consumer
        self._consumer: AIOKafkaConsumer | None = None

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = self._make_consumer()
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def lag(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Lag per partition; with none, one metadata request (which still proves the brokers answer)."""
        client = await self._client()
        tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
        if not tps:
            await client.topics()
            return {}
        ends: Mapping[TopicPartition, int] = await client.end_offsets(tps)
        committed = await asyncio.gather(*(client.committed(tp) for tp in tps))
        never = [tp for tp, offset in zip(tps, committed, strict=True) if offset is None]
        starts: Mapping[TopicPartition, int] = await client.beginning_offsets(never) if never else {}
        lags: dict[tuple[str, int], int] = {}
        for tp, offset in zip(tps, committed, strict=True):
            base = offset if offset is not None else starts.get(tp, 0)
            lags[(tp.topic, tp.partition)] = max(int(ends[tp]) - int(base), 0)
        return lags

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def listening_socket(host: str, port: int, *, setting: str = "STREAMER_METRICS_PORT") -> socket.socket:
    """A socket already listening on ``host:port``, or ``ConfigError`` with one line saying which setting to change.

    Bound at start-up, before Kafka or the model: a second process on the same port used to run on
    without ``/metrics``, ``/health`` and ``/ready`` (a worker) or crash with a traceback (the bridge).
    Listening at once matters: on Linux two sockets with ``SO_REUSEADDR`` may both bind a port that
    neither listens on yet.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait for TIME_WAIT
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, setting, exc) from None
    sock.setblocking(False)
    return sock


def cannot_listen(host: str, port: int, setting: str, exc: OSError) -> ConfigError:
    """The one-line error of a metrics port that cannot be bound, naming the setting to change."""
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return ConfigError(
        f"cannot serve /metrics on {host}:{port}: {reason} (another streamer process on this host?); "
        f"give each process its own {setting}, or 0 for no server"
    )


class OpsService(Service):  # type: ignore[misc]
    """The worker's operations side, inside its event loop: the HTTP server and the lag poller.

    Args:
        app: the Faust app; its partition signals keep ``readiness.assigned`` current.
        metrics, readiness: what the endpoints serve.
        host, port: where to listen (``STREAMER_METRICS_HOST``, ``STREAMER_METRICS_PORT``; port 0: no server).
        sock: a socket already listening (``listening_socket``), used instead of binding ``host:port`` here.
        probe: the lag probe (default: none, and so no lag metrics or broker check).
        lag_interval_s: seconds between lag measurements (default 5).
        request_timeout_s: limit on one measurement (default 15).
    """

    #: mode's own lifecycle lines ("Starting...") go where Faust's and mode's go (warnings only by default).
    logger = logging.getLogger("mode.streamer.ops")

    def __init__(
        self,
        *,
        app: Any,
        metrics: Metrics,
        readiness: Readiness,
        host: str,
        port: int,
        probe: LagProbe | None = None,
        lag_interval_s: float = LAG_INTERVAL_S,
        request_timeout_s: float = 15.0,
        sock: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sock = sock
        self.metrics = metrics
        self.readiness = readiness
        self.host = host
        self.port = port
        self.probe = probe
        self.lag_interval_s = lag_interval_s
        self.request_timeout_s = request_timeout_s
        self._runner: web.AppRunner | None = None
        self._probe_failing = False
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_assigned(self, sender: Any, assigned: Iterable[Any], **kwargs: Any) -> None:
        self.readiness.assigned = {(tp.topic, tp.partition) for tp in assigned}
        self.metrics.set_assignment(self.readiness.assigned)
        log.info(
            "partitions assigned",
            partitions=[f"{t}:{p}" for t, p in sorted(self.readiness.assigned)],
        )

    async def _on_revoked(self, sender: Any, revoked: Iterable[Any], **kwargs: Any) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self.readiness.assigned -= gone
        self.metrics.set_assignment(self.readiness.assigned)
        if gone:
            log.info("partitions revoked", partitions=[f"{t}:{p}" for t, p in sorted(gone)])

    async def on_start(self) -> None:
        if self.sock is not None or self.port:
            runner = web.AppRunner(ops_routes(self.metrics, self.readiness), access_log=None)
            await runner.setup()
            try:
                site = (
                    web.SockSite(runner, self.sock)
                    if self.sock is not None
                    else web.TCPSite(runner, self.host, self.port)
                )
                await site.start()
            except OSError as exc:
                # Only without a socket bound up front (``build_worker`` called in-process): ``streamer
                # worker`` binds before it starts and stops with one line; here triage goes on without.
                await runner.cleanup()
                log.error(
                    "metrics server cannot listen; running without /metrics, /health and /ready",
                    host=self.host,
                    port=self.port,
                    error=str(exc),
                )
            else:
                self._runner = runner
                log.info("metrics server listening", host=self.host, port=self.port)
        if self.probe is not None:
            self.add_future(self._poll_lag())

    async def measure_lag(self) -> None:
        """One lag measurement; a failure is logged once (until the next success) and retried next time."""
        assert self.probe is not None
        try:
            lags = await asyncio.wait_for(self.probe.lag(self.readiness.assigned), self.request_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._probe_failing:
                log.warning("broker round trip for consumer lag failed", error=repr(exc))
            self._probe_failing = True
            await self.probe.close()
            return
        if self._probe_failing:
            log.info("broker round trip for consumer lag works again")
        self._probe_failing = False
        self.readiness.broker_seen()
        for (topic, partition), lag in lags.items():
            if (topic, partition) in self.readiness.assigned:
                self.metrics.set_lag(topic, partition, lag)

    async def _poll_lag(self) -> None:
        while not self.should_stop:
            await self.measure_lag()
            await self.sleep(self.lag_interval_s)

    async def on_stop(self) -> None:
        self.readiness.stopping = True
        if self.probe is not None:
            await self.probe.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def lag_probe(settings: Settings) -> LagProbe:
    """A probe with our connection options and the workers' group id (never joins it: no subscription)."""
    from streamer.kafka import clients

    return LagProbe(
        lambda: clients.consumer(settings, group_id=settings.group_id, client_id=f"{settings.kafka_client_id}-lag")
    )
