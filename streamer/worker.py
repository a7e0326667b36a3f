"""Wiring of a worker process: the runtimes of ``streamer.runtime`` -> Faust app, log service, ops server.

Everything that can be wrong with the configuration (bundle, routes, topics, schemas) fails while the
runtimes load (``streamer.runtime``), at start-up, with one clear message, before the worker joins its
consumer groups.

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
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import structlog

from streamer.agents.logs import LogService
from streamer.agents.tickets import register_ticket_agent
from streamer.app import create_app
from streamer.batching import BatchPolicy
from streamer.kafka import clients
from streamer.kafka.sender import Sender
from streamer.kafka.templates import log_consumer, template_store
from streamer.metrics import Metrics, OpsService, Readiness, lag_probe
from streamer.observability import bind_process_fields
from streamer.pipeline.batch import Batch
from streamer.runtime import (
    LogRuntime,
    TicketRuntime,
    escalation_deduper,
    load_log_runtime,
    load_ticket_runtime,
    log_group_id,
    log_processor,
    shadow_topic_spec,
)
from streamer.settings import Settings
from streamer.topics import LOGS
from streamer.tracing import Tracing, configure_tracing

log = structlog.get_logger(__name__)


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
        sender: Sender,
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


#: The paths a worker can run; ``streamer worker`` runs both unless ``--only`` names one.
PATHS = ("tickets", "logs")


def build_worker(
    settings: Settings,
    *,
    runtime: TicketRuntime | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    loglevel: str = "warning",
    metrics: Metrics | None = None,
    only: Collection[str] = PATHS,
    log_runtime: LogRuntime | None = None,
    on_log_batch: Callable[[Batch], None] | None = None,
    metrics_socket: socket.socket | None = None,
) -> TriageWorker:
    """A ready-to-run worker process (``worker.execute_from_commandline()`` runs it until SIGTERM).

    Args:
        runtime: the ticket runtime (default: loaded from ``settings``, which loads the bundle).
        on_batch: called with each ticket ``Batch`` once its outputs are acknowledged.
        loglevel: Faust's own log level (default ``warning``).
        metrics: where to count (default: new ``Metrics`` on a registry of their own); served on
            ``STREAMER_METRICS_PORT`` with ``/health`` and ``/ready``.
        only: the paths to run, of ``PATHS`` (default: both, in one process; the bundle is loaded once).
        log_runtime: the log runtime (default: loaded from ``settings``, sharing the ticket path's bundle).
        on_log_batch: called with each log ``Batch`` once its outputs are acknowledged and its offsets committed.
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
    encoder = bundle.encoder
    metrics.set_model(
        info.name,
        info.version,
        device=str(getattr(encoder, "device", "")),
        compute_type=str(getattr(encoder, "compute_type", "")),
    )
    if ticket_runtime is not None:
        processor = ticket_runtime.processor
        metrics.set_escalation_budget(processor.policy.budget)
        metrics.watch_escalation_threshold(lambda: processor.escalation_threshold)
        if processor.dedup is None:
            processor.dedup = escalation_deduper(settings)
    shadow = ticket_runtime.processor.shadow if ticket_runtime is not None else None
    readiness = Readiness(model=f"{info.name}@{info.version}")

    def batch_done(result: Batch) -> None:
        metrics.record_batch(result)
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
    sender = Sender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix)
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
            max_record_tokens=int(getattr(ticket_runtime.bundle.encoder, "max_length", 256)),
            on_planner=lambda planner: metrics.watch_buffer("tickets", planner),
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

        def log_batch_done(batch: Batch) -> None:
            metrics.record_batch(batch)
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


def log_service(
    settings: Settings,
    runtime: LogRuntime,
    *,
    inline: bool = False,
    executor: ThreadPoolExecutor | None = None,
    max_batch: int | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    on_assignment: Callable[[set[tuple[str, int]]], None] | None = None,
    **kwargs: Any,
) -> LogService:
    """The log path of a worker process, ready to be started beside (or without) the Faust app.

    Args:
        inline: run the triage core on the event loop instead of its thread (for measurements).
        executor: the thread that runs the core (default: a new one-thread pool named ``log-triage``).
        max_batch: most records per batch (default ``STREAMER_LOG_MAX_BATCH``).
        on_batch, on_assignment, kwargs: passed to ``LogService`` (``loop=`` for the worker's loop).
    """
    if not inline and executor is None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-triage")
    return LogService(
        processor=log_processor(settings, runtime),
        sender=Sender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix),
        make_consumer=lambda: log_consumer(settings),
        store=template_store(settings),
        topic=settings.topic(LOGS),
        executor=None if inline else executor,
        max_batch=max_batch or settings.log_max_batch,
        max_wait_s=settings.log_max_wait_ms / 1000,
        on_batch=on_batch,
        on_assignment=on_assignment,
        **kwargs,
    )
