"""Wiring of a worker process: settings -> bundle, rules, schemas -> Faust app with its agents.

Everything that can be wrong with the configuration (bundle, routes, topics, schemas) fails here, at
start-up, with one clear message, before the worker joins its consumer group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust
import structlog

from streamer.agents.output import OutputSender
from streamer.agents.tickets import BatchResult, TicketProcessor, register_ticket_agent
from streamer.app import create_app
from streamer.events import DecodeLimits
from streamer.kafka import clients
from streamer.settings import Settings
from streamer.topics import SchemaRegistry, load_catalog
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


def ticket_policy(settings: Settings, bundle: Any) -> EscalationPolicy:
    """Settings' thresholds; the out-of-scope threshold defaults to the one the bundle calibrated."""
    oos = settings.escalate_oos_threshold
    if oos is None:
        oos = float(bundle.heads["intent"].oos_threshold)
    return policy_from(
        min_confidence=settings.escalate_min_confidence,
        min_margin=settings.escalate_min_margin,
        oos_threshold=oos,
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
    from streamer.errors import ConfigError
    from streamer.models.bundle import load_bundle

    if bundle is None:
        bundle = load_bundle(
            settings.bundle_dir,
            device=settings.device,
            compute_type=settings.compute_type,
            intra_threads=settings.intra_threads,
            inter_threads=settings.inter_threads,
        )
    missing = [h for h in TICKET_HEADS if h not in bundle.heads]
    if missing:
        raise ConfigError(f"bundle {settings.bundle_dir} lacks the ticket head(s): {', '.join(missing)}")
    registry = SchemaRegistry(settings.schemas_dir)
    catalog = load_catalog(settings.topics_file)
    schema = catalog["support.tickets.v1"].schema or "ticket.v1.json"
    processor = TicketProcessor(
        model=bundle,
        model_info=ModelInfo(bundle.name, bundle.version),
        router=ticket_router(settings, bundle),
        policy=ticket_policy(settings, bundle),
        validator=registry.validator(schema),
        limits=DecodeLimits(max_event_bytes=settings.max_event_bytes, max_text_chars=settings.max_text_chars),
    )
    return TicketRuntime(processor=processor, bundle=bundle)


class TriageWorker(faust.Worker):  # type: ignore[misc]
    """Faust's worker, plus closing our producer after the agents have stopped."""

    def __init__(self, app: faust.App, sender: OutputSender, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._sender = sender

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self._sender.close()


def build_worker(
    settings: Settings,
    *,
    runtime: TicketRuntime | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    loglevel: str = "warning",
) -> TriageWorker:
    """A ready-to-run worker process (``worker.execute_from_commandline()`` runs it until SIGTERM)."""
    runtime = runtime or load_ticket_runtime(settings)
    app = create_app(settings)
    sender = OutputSender(lambda: clients.producer(settings), topic_prefix=settings.topic_prefix)
    executor = ThreadPoolExecutor(max_workers=settings.inter_threads, thread_name_prefix="inference")
    register_ticket_agent(
        app,
        runtime.processor,
        sender,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        executor=executor,
        on_batch=on_batch,
        topic=settings.topic("support.tickets.v1"),
    )
    log.info(
        "worker configured",
        bundle=runtime.processor.model_info.name,
        version=runtime.processor.model_info.version,
        group=settings.group_id,
        bootstrap=settings.kafka_bootstrap,
    )
    worker = TriageWorker(
        app, sender, loglevel=loglevel, override_logging=False, quiet=True, loop=asyncio.new_event_loop()
    )
    worker.spinner = None  # our logs say when the worker is ready; a terminal spinner would garble them
    return worker
