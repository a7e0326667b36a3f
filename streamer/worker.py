"""Wiring of a worker process: settings -> bundle, rules, schemas -> Faust app with its agents.

Everything that can be wrong with the configuration (bundle, routes, topics, schemas) fails here, at
start-up, with one clear message, before the worker joins its consumer group.

Shutdown (SIGTERM or SIGINT): Faust stops the flow of new records, waits until every record that
reached the agent is acknowledged (our in-flight batches: processed, outputs acknowledged by the
brokers), commits, stops the agents and the consumer; then our producer closes and the process exits 0.
Records still in Faust's buffers are not processed and not committed: the next owner of the partition
gets them. If all this takes longer than ``STREAMER_SHUTDOWN_TIMEOUT_S`` (a broker that stopped
answering), the process exits 1 at that deadline, before an orchestrator's SIGKILL; what was not
committed is redelivered (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import structlog

from streamer.agents.logs import LogBatch
from streamer.agents.output import OutputSender
from streamer.agents.shadow import EmbeddingTap, ShadowRun, shadow_topic, shares_encoder
from streamer.agents.tickets import BatchResult, TicketProcessor, register_ticket_agent
from streamer.app import create_app
from streamer.batching import BatchPolicy
from streamer.events import DecodeLimits, Output
from streamer.headers import SOURCE_LOGS, SOURCE_TICKETS
from streamer.kafka import clients
from streamer.logs.runtime import LogRuntime, load_log_runtime, log_group_id, log_service
from streamer.metrics import Metrics, OpsService, Readiness, lag_probe
from streamer.observability import bind_process_fields
from streamer.pipeline import Batch
from streamer.privacy import privacy_for
from streamer.settings import Settings
from streamer.topics import ESCALATIONS, LOGS, SchemaRegistry, TopicSpec, load_catalog, load_contracts
from streamer.tracing import Tracing, configure_tracing
from streamer.triage.dedup import EscalationDeduper
from streamer.triage.escalation import EscalationPolicy, policy_from
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import Router, load_router
from streamer.triage.tickets import TICKET_HEADS

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TicketRuntime:
    """What the ticket path needs besides Kafka; shared by the worker, replay and benchmarks."""

    processor: TicketProcessor
    bundle: Any


#: Fixed cut-offs for a bundle whose intent head has no escalation score.
FALLBACK_MIN_CONFIDENCE = 0.55
FALLBACK_MIN_MARGIN = 0.10


def escalation_budget(settings: Settings, bundle: Any) -> tuple[float, float] | None:
    """``(rate, score threshold)`` the worker spends: ``STREAMER_ESCALATE_RATE`` or the bundle's own budget,
    with the threshold the bundle calibrated for it; ``None`` when the intent head has no escalation score."""
    scorer = getattr(bundle.heads["intent"], "escalation", None)
    if scorer is None:
        return None
    rate = settings.escalate_rate if settings.escalate_rate is not None else float(scorer.rate)
    return rate, float(scorer.threshold(rate))


def ticket_policy(settings: Settings, bundle: Any) -> EscalationPolicy:
    """The bundle's escalation budget when it has one, plus any cut-off settings set explicitly; without a
    budget, fixed cut-offs. The out-of-scope threshold defaults to the one the bundle calibrated."""
    oos = settings.escalate_oos_threshold
    if oos is None:
        oos = float(bundle.heads["intent"].oos_threshold)
    budget = escalation_budget(settings, bundle)
    # with a budget the score decides; fixed cut-offs apply only where a setting asks for them
    min_confidence = settings.escalate_min_confidence
    if min_confidence is None:
        min_confidence = 0.0 if budget is not None else FALLBACK_MIN_CONFIDENCE
    min_margin = settings.escalate_min_margin
    if min_margin is None:
        min_margin = 0.0 if budget is not None else FALLBACK_MIN_MARGIN
    return policy_from(
        min_confidence=min_confidence,
        min_margin=min_margin,
        oos_threshold=oos,
        score_threshold=None if budget is None else budget[1],
        budget=None if budget is None else budget[0],
        oos_rule=budget is None or settings.escalate_oos_threshold is not None,
        long_text_chars=settings.escalate_long_text_chars,
        vip_tiers=settings.escalate_vip_tiers,
        supported_languages=settings.supported_languages,
    )


def ticket_router(settings: Settings, bundle: Any) -> Router:
    """The tickets section of routes.yaml, checked against declared topics and the bundle's labels."""
    catalog = load_catalog(settings.topics_file)
    labels = {head: list(bundle.heads[head].labels) for head in TICKET_HEADS}
    return load_router(settings.routes_file, "tickets", known_topics=catalog.topics, known_labels=labels)


def load_ticket_runtime(settings: Settings, bundle: Any | None = None) -> TicketRuntime:
    """Load (or take) the bundle and compile everything the ticket processor needs."""
    privacy = privacy_for(settings)  # a bad policy fails before the bundle is loaded
    bundle = ticket_bundle(settings, settings.bundle_dir, "bundle", bundle)
    registry = SchemaRegistry(settings.schemas_dir)
    catalog = load_catalog(settings.topics_file)
    schema = catalog["support.tickets.v1"].schema or "ticket.v1.json"
    shadow = load_shadow(settings, bundle) if settings.shadow_bundle_dir is not None else None
    processor = TicketProcessor(
        model=shadow.tap if shadow is not None and shadow.tap is not None else bundle,
        model_info=ModelInfo(bundle.name, bundle.version),
        router=ticket_router(settings, bundle),
        policy=ticket_policy(settings, bundle),
        validator=registry.validator(schema),
        limits=DecodeLimits(max_event_bytes=settings.max_event_bytes, max_text_chars=settings.max_text_chars),
        contracts=load_contracts(settings.topics_dir, SOURCE_TICKETS, (bundle.name, bundle.version)),
        privacy=privacy,
        shadow=shadow,
    )
    return TicketRuntime(processor=processor, bundle=bundle)


def ticket_bundle(settings: Settings, path: Path, role: str, bundle: Any = None) -> Any:
    """The bundle at ``path`` (or ``bundle``, already loaded) on the worker's device, with every ticket head."""
    from streamer.errors import ConfigError
    from streamer.models.bundle import load_bundle

    if bundle is None:
        bundle = load_bundle(
            path,
            device=settings.device,
            compute_type=settings.compute_type,
            intra_threads=settings.intra_threads,
            inter_threads=settings.inter_threads,
        )
    missing = [h for h in TICKET_HEADS if h not in bundle.heads]
    if missing:
        raise ConfigError(f"{role} {path} lacks the ticket head(s): {', '.join(missing)}")
    return bundle


def escalation_deduper(settings: Settings) -> EscalationDeduper | None:
    """The live worker's near-duplicate folding (``STREAMER_ESCALATE_DEDUP_*``); replay runs without it, so
    that its decisions depend on the records alone."""
    if settings.escalate_dedup_window_s <= 0:
        return None
    return EscalationDeduper(settings.escalate_dedup_window_s, settings.escalate_dedup_min_cosine)


def load_shadow(settings: Settings, live: Any) -> ShadowRun:
    """The shadow bundle of ``STREAMER_SHADOW_BUNDLE_DIR``, checked like the live one, with its own rules."""
    assert settings.shadow_bundle_dir is not None
    bundle = ticket_bundle(settings, settings.shadow_bundle_dir, "shadow bundle")
    same = shares_encoder(getattr(live, "manifest", {}), bundle.manifest)
    return ShadowRun(
        bundle=bundle,
        model_info=ModelInfo(bundle.name, bundle.version),
        router=ticket_router(settings, bundle),
        policy=ticket_policy(settings, bundle),
        topic=shadow_topic(bundle.version),
        tap=EmbeddingTap(live) if same else None,
    )


def shadow_topic_spec(settings: Settings, shadow: ShadowRun) -> TopicSpec:
    """The shadow topic, declared like the enriched topic with the short retention of replay topics."""
    from dataclasses import replace

    base = load_catalog(settings.topics_file).replay_topic("support.tickets.enriched.v1", "shadow")
    return replace(base, name=shadow.topic, description=f"Decisions of shadow bundle {shadow.model_info.version}")


def ticket_batch_policy(settings: Settings, app: faust.App) -> BatchPolicy | None:
    """The adaptive batcher's policy (``None``: fixed batches).

    A pause lasts about two batches (from two budgets buffered down to one), so a batch may run at most a
    quarter of the poll interval: the group never sees a worker as stuck while its fetch is paused.
    """
    if settings.batching == "fixed":
        return None
    return BatchPolicy(
        max_batch_tokens=settings.batch_max_tokens,
        latency_target_s=settings.latency_target_ms / 1000,
        max_batch_s=float(app.conf.broker_max_poll_interval) / 4,
    )


#: Exit status when the shutdown deadline passes (0 is a clean shutdown).
EXIT_SHUTDOWN_TIMEOUT = 1


class TriageWorker(faust.Worker):  # type: ignore[misc]
    """Faust's worker, plus a shutdown deadline and closing our producer after the agents have stopped.

    Args:
        app: the Faust app with its agents.
        sender: our output producer, closed last.
        services: run beside the app (started before it, stopped after it), e.g. ``OpsService``.
        readiness: marked as stopping as soon as a shutdown signal arrives (``/ready`` then says 503).
        shutdown_timeout_s: deadline from the signal to the process' exit (``STREAMER_SHUTDOWN_TIMEOUT_S``).
        run_app: start the Faust app (``False`` for a logs-only worker: Faust cannot start without agents).
    """

    def __init__(
        self,
        app: faust.App,
        sender: OutputSender,
        *services: Any,
        readiness: Readiness | None = None,
        shutdown_timeout_s: float | None = None,
        run_app: bool = True,
        tracing: Tracing | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, *services, **kwargs)
        self._sender = sender
        self._tracing = tracing
        self._run_app = run_app
        self._readiness = readiness
        self.shutdown_timeout_s = shutdown_timeout_s
        self._signalled_at: float | None = None
        self._deadline: threading.Timer | None = None

    def on_init_dependencies(self) -> Iterable[Any]:
        dependencies = super().on_init_dependencies()
        return dependencies if self._run_app else list(self.services)

    def _on_sigterm(self) -> None:
        self._shutdown_requested(signal.SIGTERM)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._shutdown_requested(signal.SIGINT)
        super()._on_sigint()

    def _shutdown_requested(self, signum: signal.Signals) -> None:
        if self._signalled_at is not None:
            return
        self._signalled_at = time.monotonic()
        if self._readiness is not None:
            self._readiness.stopping = True
        log.info("shutdown requested", signal=signum.name, timeout_s=self.shutdown_timeout_s)
        if self.shutdown_timeout_s is not None:
            # A thread, not a loop timer: the deadline must hold even if the event loop is stuck.
            self._deadline = threading.Timer(self.shutdown_timeout_s, self._deadline_passed)
            self._deadline.daemon = True
            self._deadline.start()

    def _deadline_passed(self) -> None:
        log.error(
            "shutdown did not finish in time; exiting, uncommitted records will be redelivered",
            timeout_s=self.shutdown_timeout_s,
            exit_code=EXIT_SHUTDOWN_TIMEOUT,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self._sender.close()
        if self._tracing is not None:
            self._tracing.shutdown()  # spans still buffered leave before the process does
        if self._signalled_at is not None:
            log.info("worker stopped", shutdown_s=round(time.monotonic() - self._signalled_at, 2))

    def _shutdown_loop(self) -> None:
        # mode's last steps (gathering tasks, closing the loop) still count against the deadline; the
        # timer is cancelled only when they are done and nothing but the interpreter's exit is left.
        try:
            super()._shutdown_loop()
        finally:
            if self._deadline is not None:
                self._deadline.cancel()


# until both paths return pipeline.Batch: the two results as the one type the metrics read
def ticket_batch(result: BatchResult) -> Batch:
    """The ticket path's ``BatchResult`` as a ``Batch`` (same fields)."""
    return Batch(
        path="tickets",
        outputs=result.outputs,
        size=result.size,
        processed=result.processed,
        events_in=result.events_in,
        source_timestamps_ms=result.source_timestamps_ms,
        dead_letters=result.dead_letters,
        escalations=result.escalations,
        model_escalated=result.model_escalated,
        deduplicated=result.deduplicated,
        shadow_agreement=result.shadow_agreement,
        intents=result.intents,
        routes=result.routes,
        inference_s=result.inference_s,
    )


def log_batch(batch: LogBatch, topic: str) -> Batch:
    """The log path's ``LogBatch`` as a ``Batch``: its lines all came from ``topic``; it carries no source
    timestamps, so end-to-end latency of logs is observed once the log path fills them."""
    outputs = [
        Output(t, key, {}, tuple(headers), value) for t, recs in batch.records.items() for key, value, headers in recs
    ]
    return Batch(
        path="logs",
        outputs=outputs,
        size=batch.size,
        processed=batch.processed,
        events_in=Counter({topic: batch.size}) if batch.size else Counter(),
        dead_letters=batch.dead_letters,
        escalations=batch.escalations,
        escalated=len(batch.records.get(ESCALATIONS, ())),
        alerts=batch.alerts,
        templates=batch.templates,
        classified=batch.classified,
        inference_s=batch.triage_s,
        decode_s=batch.decode_s,
        encode_s=batch.encode_s,
    )


#: The paths a worker can run; ``streamer worker`` runs both unless ``--only`` names one.
PATHS = ("tickets", "logs")


def build_worker(
    settings: Settings,
    *,
    runtime: TicketRuntime | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    loglevel: str = "warning",
    metrics: Metrics | None = None,
    only: Collection[str] = PATHS,
    log_runtime: LogRuntime | None = None,
    on_log_batch: Callable[[LogBatch], None] | None = None,
    metrics_socket: socket.socket | None = None,
) -> TriageWorker:
    """A ready-to-run worker process (``worker.execute_from_commandline()`` runs it until SIGTERM).

    Args:
        runtime: the ticket runtime (default: loaded from ``settings``, which loads the bundle).
        on_batch: called with each batch's ``BatchResult`` once its outputs are acknowledged.
        loglevel: Faust's own log level (default ``warning``).
        metrics: where to count (default: new ``Metrics`` on a registry of their own); served on
            ``STREAMER_METRICS_PORT`` with ``/health`` and ``/ready``.
        only: the paths to run, of ``PATHS`` (default: both, in one process; the bundle is loaded once).
        log_runtime: the log runtime (default: loaded from ``settings``, sharing the ticket path's bundle).
        on_log_batch: called with each ``LogBatch`` once its outputs are acknowledged and its offsets committed.
        metrics_socket: a socket already listening for ``/metrics`` (``metrics.listening_socket``), so a
            port in use is found before anything starts; default: bind ``STREAMER_METRICS_PORT`` later.
    """
    paths = set(only)
    if not paths or not paths <= set(PATHS):
        from streamer.errors import ConfigError

        raise ConfigError(f"paths to run must be among {', '.join(PATHS)}; got {', '.join(sorted(paths)) or 'none'}")
    ticket_runtime = (runtime or load_ticket_runtime(settings)) if "tickets" in paths else None
    if "logs" not in paths:
        log_runtime = None
    elif log_runtime is None:
        log_runtime = load_log_runtime(settings, ticket_runtime.bundle if ticket_runtime is not None else None)
    if ticket_runtime is not None:
        info, bundle = ticket_runtime.processor.model_info, ticket_runtime.bundle
    else:
        assert log_runtime is not None
        info, bundle = log_runtime.model_info, log_runtime.bundle
    bind_process_fields(bundle=info.name, bundle_version=info.version)
    metrics = metrics or Metrics(topic_prefix=settings.topic_prefix)
    encoder = getattr(bundle, "encoder", None)
    metrics.set_model(
        info.name,
        info.version,
        device=str(getattr(encoder, "device", "")),
        compute_type=str(getattr(encoder, "compute_type", "")),
    )
    if ticket_runtime is not None:
        metrics.set_escalation_budget(ticket_runtime.processor.policy.budget)
        if ticket_runtime.processor.dedup is None:
            ticket_runtime.processor.dedup = escalation_deduper(settings)
    shadow = ticket_runtime.processor.shadow if ticket_runtime is not None else None
    readiness = Readiness(model=f"{info.name}@{info.version}")

    def batch_done(result: BatchResult) -> None:
        metrics.record_batch(ticket_batch(result))  # until the ticket path returns pipeline.Batch
        if result.outputs:
            readiness.broker_seen()  # the brokers just acknowledged this batch's outputs
        if on_batch is not None:
            on_batch(result)

    tracing = configure_tracing("streamer-worker")
    tracing.topic_prefix, tracing.consumer_group = settings.topic_prefix, settings.group_id
    if ticket_runtime is not None:
        ticket_runtime.processor.tracing = tracing
    loop = asyncio.new_event_loop()
    if shadow is not None:
        from streamer.kafka.admin import apply_topics

        loop.run_until_complete(apply_topics(settings, [shadow_topic_spec(settings, shadow)]))
        log.info(
            "shadow bundle",
            version=shadow.model_info.version,
            topic=settings.topic(shadow.topic),
            shares_encoder=shadow.tap is not None,
        )
    app = create_app(settings)
    sender = OutputSender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix)
    executor = ThreadPoolExecutor(max_workers=settings.inter_threads, thread_name_prefix="inference")
    if ticket_runtime is not None:
        register_ticket_agent(
            app,
            ticket_runtime.processor,
            sender,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            executor=executor,
            on_batch=batch_done,
            topic=settings.topic("support.tickets.v1"),
            policy=ticket_batch_policy(settings, app),
            max_record_tokens=int(getattr(getattr(ticket_runtime.bundle, "encoder", None), "max_length", 256)),
        )
    # Lag of each group this worker belongs to: <group> (tickets) and <group>-logs.
    probes = [lag_probe(settings, settings.group_id, "tickets")] if ticket_runtime is not None else []
    if log_runtime is not None:
        probes.append(lag_probe(settings, log_group_id(settings), "logs"))
    ops = OpsService(
        app=app,
        metrics=metrics,
        readiness=readiness,
        host=settings.metrics_host,
        port=settings.metrics_port,
        probes=probes,
        app_group=settings.group_id,
        request_timeout_s=settings.kafka_request_timeout_ms / 1000,
        loop=loop,
        sock=metrics_socket,
    )
    services: list[Any] = [ops]
    if log_runtime is not None:
        log_topic = settings.topic(LOGS)

        def log_batch_done(batch: LogBatch) -> None:
            metrics.record_batch(log_batch(batch, log_topic))  # until the log path returns pipeline.Batch
            if batch.outputs:
                readiness.broker_seen()
            if on_log_batch is not None:
                on_log_batch(batch)

        def log_assignment(partitions: set[tuple[str, int]]) -> None:
            ops.set_assignment(log_group_id(settings), "logs", partitions)
            if ticket_runtime is None:  # without the ticket path, readiness follows the log consumer
                readiness.assigned = partitions

        logs = log_service(settings, log_runtime, on_batch=log_batch_done, on_assignment=log_assignment, loop=loop)
        logs.processor.tracing = tracing
        model = log_runtime.model_info
        logs.processor.contracts = load_contracts(settings.topics_dir, SOURCE_LOGS, (model.name, model.version))
        services.append(logs)
    log.info(
        "worker configured",
        paths=sorted(paths),
        group=settings.group_id,
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic("support.tickets.v1"),
        metrics_port=settings.metrics_port,
    )
    worker = TriageWorker(
        app,
        sender,
        *services,
        readiness=readiness,
        shutdown_timeout_s=settings.shutdown_timeout_s,
        run_app=ticket_runtime is not None,
        tracing=tracing,
        loglevel=loglevel,
        override_logging=False,
        quiet=True,
        loop=loop,
    )
    worker.spinner = None  # our logs say when the worker is ready; a terminal spinner would garble them
    return worker
