"""Wiring of the log path: the incident model behind the core's classifier, the state, the template store.

The rest of ``streamer.logs`` is pure; this module is where the log path meets the model bundle and
Kafka, the way ``streamer.worker.load_ticket_runtime`` does for tickets:

* ``BundleIncidentClassifier``: the bundle's ``incident`` head as the core's ``IncidentClassifier``. The
  core calls it once per batch with only the templates it has not classified yet, so the encoder runs
  once per template, never per line.
* ``TemplateStore``: reads the compacted ``ops.log_templates.v1`` from the beginning to its end offsets
  (at start, before any log is consumed) and then from where it stopped (on every partition
  assignment). Loading those records into the ``LogTriageState`` keeps template ids stable across
  restarts: a line maps to the template that earlier lines generalised, not to a fresh specific one,
  and templates already alerted on (``error_seen``) do not alert again. Ids are content hashes, so
  what other workers published agrees with what this one mines.
* ``load_log_runtime``: settings (and optionally an already loaded bundle) to the objects above;
  ``log_service``: those, a consumer, a producer and the store as the worker's ``LogService``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.agents.logs import BatchSender, LogBatch, LogProcessor, LogService
from streamer.errors import ConfigError
from streamer.events import DecodeLimits
from streamer.kafka import clients
from streamer.logs import routes
from streamer.logs.decode import Layouts, compile_layouts
from streamer.logs.triage import LogTriageConfig, LogTriageState
from streamer.privacy import Privacy, privacy_for
from streamer.settings import Settings
from streamer.topics import LOG_TEMPLATES, LOGS, LOGS_ENRICHED, load_catalog
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import Router, load_router

__all__ = [
    "INCIDENT_HEAD",
    "LOG_MAX_BATCH",
    "BundleIncidentClassifier",
    "LogRuntime",
    "TemplateStore",
    "load_log_runtime",
    "log_consumer",
    "log_group_id",
    "log_router",
    "log_service",
    "template_store",
]

log = structlog.get_logger(__name__)

#: The bundle head that classifies log templates.
INCIDENT_HEAD = "incident"


class BundleIncidentClassifier:
    """The ``incident`` head of a bundle as an ``IncidentClassifier``.

    Args:
        bundle: a loaded ``streamer.models.bundle.Bundle`` (anything with ``heads`` and ``predict``).
        head: the head to use (default ``incident``).
        oos_label: the class given to templates the head calls out of scope (far from every class it was
            trained on), when the head has that label (default ``other``); ``None`` keeps the top class.

    ``calls`` and ``classified`` count model calls and templates, to show that the model runs per template.
    """

    def __init__(self, bundle: Any, *, head: str = INCIDENT_HEAD, oos_label: str | None = "other") -> None:
        if head not in bundle.heads:
            raise ConfigError(f"bundle {getattr(bundle, 'path', '')} lacks the log head {head!r}")
        self.bundle = bundle
        self.head = head
        self.oos_label = oos_label if oos_label in bundle.heads[head].labels else None
        self.calls = 0
        self.classified = 0

    def classify_templates(self, templates: Sequence[str]) -> list[tuple[str, float]]:
        if not templates:
            return []
        out = self.bundle.predict(list(templates), heads=[self.head])[self.head]
        self.calls += 1
        self.classified += len(templates)
        results: list[tuple[str, float]] = []
        for label, confidence, oos in zip(out.top, out.confidence, out.oos, strict=True):
            name = self.oos_label if oos and self.oos_label is not None else str(label)
            results.append((name, float(confidence)))
        return results


class TemplateStore:
    """The compacted templates topic, read up to its end offsets; each ``catch_up`` continues where the last stopped.

    Args:
        make_consumer: a consumer without a group (it assigns every partition itself and never commits).
        topic: the templates topic as named on the cluster (prefix included).
        timeout_s: limit on one catch-up; a topic that cannot be read to its end in time is a start-up error.
    """

    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer], topic: str, *, timeout_s: float = 60.0) -> None:
        self._make_consumer = make_consumer
        self.topic = topic
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self.skipped = 0

    async def start(self) -> None:
        consumer = self._make_consumer()
        await consumer.start()
        try:
            self._partitions = await clients.topic_partitions(consumer, self.topic)
            consumer.assign(self._partitions)
            await consumer.seek_to_beginning(*self._partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def catch_up(self) -> list[dict[str, Any]]:
        """Template records published since the last call (all of them on the first), the latest per id."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("TemplateStore.catch_up() before start()")
        ends: dict[TopicPartition, int] = await consumer.end_offsets(self._partitions)
        latest: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout_s
        while True:
            behind = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} to its end took more than {self.timeout_s:g} s")
            fetched = await consumer.getmany(*behind, timeout_ms=500, max_records=10_000)
            for messages in fetched.values():
                for message in messages:
                    self._apply(latest, message.key, message.value)
        return list(latest.values())

    def _apply(self, latest: dict[str, dict[str, Any]], key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone: the id is gone from the topic
            if key is not None:
                latest.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("template_id"), str):
            self.skipped += 1
            log.warning("unreadable template record skipped", topic=self.topic, key=repr(key)[:80])
            return
        latest.pop(doc["template_id"], None)  # re-insert: the latest record of an id is applied last
        latest[doc["template_id"]] = doc

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


@dataclass
class LogRuntime:
    """What the log path needs besides Kafka; one per worker process (the state is not thread-safe)."""

    state: LogTriageState
    classifier: BundleIncidentClassifier
    model_info: ModelInfo
    limits: DecodeLimits
    bundle: Any
    privacy: Privacy = field(default_factory=Privacy)
    layouts: Layouts = field(default_factory=dict)
    #: The ``logs`` rules of ``routes.yaml`` (``None``: no log routing).
    router: Router | None = None


def log_router(settings: Settings, incident_classes: Sequence[str]) -> Router:
    """The ``logs`` section of routes.yaml, checked against declared topics, severities, alert kinds and the
    incident head's classes; a log rule may only send to topics that carry enriched log records."""
    catalog = load_catalog(settings.topics_file)
    router = load_router(
        settings.routes_file,
        "logs",
        known_topics=catalog.topics,
        known_labels=routes.known_labels(tuple(incident_classes)),
    )
    schema = catalog[LOGS_ENRICHED].schema
    for rule in router.rules:
        wrong = [t for t in rule.destinations if catalog[t].schema != schema]
        if wrong:
            raise ConfigError(
                f"{settings.routes_file}: logs rule {rule.name!r}: {', '.join(wrong)} do(es) not carry enriched "
                f"log records ({schema})"
            )
    wrong = [t for t in router.default if catalog[t].schema != schema]
    if wrong:
        raise ConfigError(f"{settings.routes_file}: logs default: {', '.join(wrong)} do(es) not carry {schema}")
    return router


def load_log_runtime(
    settings: Settings, bundle: Any | None = None, *, config: LogTriageConfig | None = None
) -> LogRuntime:
    """Load (or take) the bundle, check its incident head, and start an empty triage state.

    The state is filled from the templates topic when the log service starts, not here: that needs Kafka.
    """
    privacy = privacy_for(settings)  # a bad policy fails before the bundle is loaded
    if bundle is None:
        from streamer.models.bundle import load_bundle

        bundle = load_bundle(
            settings.bundle_dir,
            device=settings.device,
            compute_type=settings.compute_type,
            intra_threads=settings.intra_threads,
            inter_threads=settings.inter_threads,
        )
    classifier = BundleIncidentClassifier(bundle)
    return LogRuntime(
        state=LogTriageState(config),
        classifier=classifier,
        model_info=ModelInfo(bundle.name, bundle.version),
        limits=DecodeLimits(max_event_bytes=settings.max_event_bytes, max_text_chars=settings.max_text_chars),
        layouts=compile_layouts(settings.log_layouts),
        bundle=bundle,
        privacy=privacy,
        router=log_router(settings, list(bundle.heads[classifier.head].labels)),
    )


def log_group_id(settings: Settings) -> str:
    """The log path's consumer group: its own, so ticket and log partitions are assigned independently."""
    return f"{settings.group_id}-logs"


def log_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """The log path's group consumer: manual commits, from the earliest offset when the group has none."""
    options: dict[str, Any] = {
        "group_id": log_group_id(settings),
        "client_id": f"{settings.kafka_client_id}-logs",
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        # Static membership per group: the same id serves the ticket group and this one.
        "group_instance_id": settings.group_instance_id,
    }
    options.update(overrides)
    return clients.consumer(settings, **options)


def template_store(settings: Settings, *, timeout_s: float | None = None) -> TemplateStore:
    """A store on ``ops.log_templates.v1`` (with the topic prefix) for this worker's settings."""
    return TemplateStore(
        lambda: clients.consumer(settings, group_id=None, client_id=f"{settings.kafka_client_id}-templates"),
        settings.topic(LOG_TEMPLATES),
        timeout_s=timeout_s if timeout_s is not None else max(settings.kafka_request_timeout_ms / 1000 * 4, 30.0),
    )


#: Most log records per batch: large enough that per-batch costs (a thread hand-off, one produce request
#: per partition, one commit) vanish per line, small enough that a batch takes well under a second.
LOG_MAX_BATCH = 2000


def log_service(
    settings: Settings,
    runtime: LogRuntime,
    *,
    inline: bool = False,
    executor: ThreadPoolExecutor | None = None,
    max_batch: int = LOG_MAX_BATCH,
    on_batch: Callable[[LogBatch], None] | None = None,
    on_assignment: Callable[[set[tuple[str, int]]], None] | None = None,
    **kwargs: Any,
) -> LogService:
    """The log path of a worker process, ready to be started beside (or without) the Faust app.

    Args:
        inline: run the triage core on the event loop instead of its thread (for measurements).
        executor: the thread that runs the core (default: a new one-thread pool named ``log-triage``).
        max_batch: most records per batch (default ``LOG_MAX_BATCH``).
        on_batch, on_assignment, kwargs: passed to ``LogService`` (``loop=`` for the worker's loop).
    """
    processor = LogProcessor(
        runtime.state,
        runtime.classifier,
        runtime.model_info,
        runtime.limits,
        privacy=runtime.privacy,
        layouts=runtime.layouts,
        hold=settings.log_hold_batch,
        router=runtime.router,
    )
    if not inline and executor is None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-triage")
    return LogService(
        processor=processor,
        sender=BatchSender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix),
        make_consumer=lambda: log_consumer(settings),
        store=template_store(settings),
        topic=settings.topic(LOGS),
        executor=None if inline else executor,
        max_batch=max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        on_batch=on_batch,
        on_assignment=on_assignment,
        **kwargs,
    )
