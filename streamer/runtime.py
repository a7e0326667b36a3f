"""Settings to the runtimes of both paths: the bundle, rules, policies, contracts and privacy they need.

Everything that can be wrong with the configuration (bundle, routes, topics, schemas, privacy policy)
fails here, at start-up, with one clear message. Settings-aware but free of Kafka clients and Faust: the
worker (``streamer.worker``) wires these runtimes into its agents, and ``streamer replay``, ``streamer
triage --file`` and the benchmarks run the same processors without loading Faust. Once loaded, a
long-running process fits Python's cyclic collector to its heap (``tune_garbage_collector``).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from streamer.errors import ConfigError
from streamer.events import DecodeLimits
from streamer.headers import SOURCE_LOGS, SOURCE_TICKETS, Contracts, TopicContract
from streamer.logs import routes as log_routes
from streamer.logs.decode import Layouts, compile_layouts
from streamer.logs.triage import LogTriageConfig, LogTriageState
from streamer.pipeline.bundle import Bundle
from streamer.pipeline.logs import BundleIncidentClassifier, LogProcessor
from streamer.pipeline.shadow import EmbeddingTap, ShadowRun, shadow_topic, shares_encoder
from streamer.pipeline.tickets import TicketProcessor
from streamer.privacy import Privacy, build_privacy, unkeyed_pseudonyms
from streamer.settings import Settings, log_triage_config
from streamer.topics import LOGS_ENRICHED, TICKETS_ENRICHED, SchemaRegistry, TopicSpec, load_catalog, load_contracts
from streamer.triage.dedup import EscalationDeduper
from streamer.triage.escalation import BudgetSpender, EscalationPolicy, policy_from
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import Router, load_router
from streamer.triage.tickets import TICKET_HEADS

__all__ = [
    "FALLBACK_MIN_CONFIDENCE",
    "FALLBACK_MIN_MARGIN",
    "LogRuntime",
    "TicketRuntime",
    "budget_spender",
    "escalation_budget",
    "escalation_deduper",
    "load_bundle_for",
    "load_log_runtime",
    "load_shadow",
    "load_ticket_runtime",
    "log_contracts",
    "log_group_id",
    "log_processor",
    "privacy_for",
    "shadow_topic_spec",
    "ticket_bundle",
    "ticket_contracts",
    "ticket_policy",
    "ticket_router",
]

log = structlog.get_logger(__name__)


def privacy_for(settings: Settings) -> Privacy:
    """The policy of ``settings.topics_file`` and its secret; warns when pseudonyms fall back to masks."""
    catalog = load_catalog(settings.topics_file)
    key = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key is not None else None
    privacy = build_privacy(settings.topics_file, catalog.topics, key=key, key_version=settings.pseudonym_key_version)
    masked = unkeyed_pseudonyms(privacy)
    if masked:
        log.warning("no STREAMER_PSEUDONYM_KEY: values to pseudonymise are masked instead", topics=masked)
    return privacy


def ticket_contracts(settings: Settings, model: ModelInfo) -> Contracts:
    """Output headers of the ticket path for records decided by ``model``."""
    return load_contracts(settings.topics_dir, SOURCE_TICKETS, (model.name, model.version))


def log_contracts(settings: Settings, model: ModelInfo) -> Contracts:
    """Output headers of the log path for records classified by ``model``."""
    return load_contracts(settings.topics_dir, SOURCE_LOGS, (model.name, model.version))


def load_bundle_for(settings: Settings, path: Path) -> Bundle:
    """The bundle at ``path`` on the device and threads the settings ask for."""
    from streamer.models.bundle import load_bundle

    return load_bundle(
        path,
        device=settings.device,
        compute_type=settings.compute_type,
        intra_threads=settings.intra_threads,
        inter_threads=settings.inter_threads,
    )


# --- tickets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketRuntime:
    """What the ticket path needs besides Kafka; shared by the worker, replay and benchmarks."""

    processor: TicketProcessor
    bundle: Bundle


#: Fixed cut-offs for a bundle whose intent head has no escalation score.
FALLBACK_MIN_CONFIDENCE = 0.55
FALLBACK_MIN_MARGIN = 0.10


def escalation_budget(settings: Settings, bundle: Bundle) -> tuple[float, float] | None:
    """``(rate, score threshold)`` the worker spends: ``STREAMER_ESCALATE_RATE`` or the bundle's own budget,
    with the threshold the bundle calibrated for it; ``None`` when the intent head has no escalation score."""
    scorer = getattr(bundle.heads["intent"], "escalation", None)
    if scorer is None:
        return None
    rate = settings.escalate_rate if settings.escalate_rate is not None else float(scorer.rate)
    return rate, float(scorer.threshold(rate))


def budget_spender(settings: Settings, bundle: Bundle) -> BudgetSpender | None:
    """Spends the budget that calm traffic leaves unused (``STREAMER_ESCALATE_SPEND_WINDOW``), between the
    calibrated threshold and the calibrated threshold of twice the budget; ``None`` without a budget."""
    scorer = getattr(bundle.heads["intent"], "escalation", None)
    budget = escalation_budget(settings, bundle)
    if scorer is None or budget is None or settings.escalate_spend_window == 0:
        return None
    rate, ceiling = budget
    floor = float(scorer.threshold(min(0.5, 2 * rate)))
    return BudgetSpender(rate, ceiling, floor, settings.escalate_spend_window)


def ticket_policy(settings: Settings, bundle: Bundle) -> EscalationPolicy:
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


def ticket_router(settings: Settings, bundle: Bundle) -> Router:
    """The tickets section of routes.yaml, checked against declared topics and the bundle's labels."""
    catalog = load_catalog(settings.topics_file)
    labels = {head: list(bundle.heads[head].labels) for head in TICKET_HEADS}
    return load_router(settings.routes_file, "tickets", known_topics=catalog.topics, known_labels=labels)


def load_ticket_runtime(settings: Settings, bundle: Bundle | None = None) -> TicketRuntime:
    """Load (or take) the bundle and compile everything the ticket processor needs."""
    privacy = privacy_for(settings)  # a bad policy fails before the bundle is loaded
    bundle = ticket_bundle(settings, settings.bundle_dir, "bundle", bundle)
    registry = SchemaRegistry(settings.schemas_dir)
    catalog = load_catalog(settings.topics_file)
    schema = catalog["support.tickets.v1"].schema or "ticket.v1.json"
    contracts = ticket_contracts(settings, ModelInfo(bundle.name, bundle.version))
    shadow = load_shadow(settings, bundle, contracts) if settings.shadow_bundle_dir is not None else None
    processor = TicketProcessor(
        model=shadow.tap if shadow is not None and shadow.tap is not None else bundle,
        model_info=ModelInfo(bundle.name, bundle.version),
        router=ticket_router(settings, bundle),
        policy=ticket_policy(settings, bundle),
        validator=registry.validator(schema),
        limits=DecodeLimits(max_event_bytes=settings.max_event_bytes, max_text_chars=settings.max_text_chars),
        contracts=contracts,
        privacy=privacy,
        shadow=shadow,
        spender=budget_spender(settings, bundle),
    )
    return TicketRuntime(processor=processor, bundle=bundle)


def ticket_bundle(settings: Settings, path: Path, role: str, bundle: Bundle | None = None) -> Bundle:
    """The bundle at ``path`` (or ``bundle``, already loaded) on the worker's device, with every ticket head."""
    if bundle is None:
        bundle = load_bundle_for(settings, path)
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


def load_shadow(settings: Settings, live: Bundle, live_contracts: Contracts | None = None) -> ShadowRun:
    """The shadow bundle of ``STREAMER_SHADOW_BUNDLE_DIR``, checked like the live one, with its own rules.

    Its records carry the enriched topic's type and schema (``live_contracts``, default: the settings')
    with the shadow bundle as their model.
    """
    assert settings.shadow_bundle_dir is not None
    bundle = ticket_bundle(settings, settings.shadow_bundle_dir, "shadow bundle")
    same = shares_encoder(getattr(live, "manifest", {}), bundle.manifest)
    model_info = ModelInfo(bundle.name, bundle.version)
    topic = shadow_topic(bundle.version)
    if live_contracts is None:
        live_contracts = ticket_contracts(settings, model_info)
    enriched = live_contracts.contracts.get(TICKETS_ENRICHED)
    contract = TopicContract(topic, enriched.type, enriched.dataschema) if enriched is not None else None
    return ShadowRun(
        bundle=bundle,
        model_info=model_info,
        router=ticket_router(settings, bundle),
        policy=ticket_policy(settings, bundle),
        topic=topic,
        tap=EmbeddingTap(live) if same else None,
        spender=budget_spender(settings, bundle),
        contracts=(
            Contracts({topic: contract}, SOURCE_TICKETS, (bundle.name, bundle.version))
            if contract is not None
            else None
        ),
    )


def shadow_topic_spec(settings: Settings, shadow: ShadowRun) -> TopicSpec:
    """The shadow topic, declared like the enriched topic with the short retention of replay topics."""
    base = load_catalog(settings.topics_file).replay_topic("support.tickets.enriched.v1", "shadow")
    return replace(base, name=shadow.topic, description=f"Decisions of shadow bundle {shadow.model_info.version}")


# --- logs -------------------------------------------------------------------------------------------------


@dataclass
class LogRuntime:
    """What the log path needs besides Kafka; one per worker process (the state is not thread-safe)."""

    state: LogTriageState
    classifier: BundleIncidentClassifier
    model_info: ModelInfo
    limits: DecodeLimits
    bundle: Bundle
    contracts: Contracts
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
        known_labels=log_routes.known_labels(tuple(incident_classes)),
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
    settings: Settings, bundle: Bundle | None = None, *, config: LogTriageConfig | None = None
) -> LogRuntime:
    """Load (or take) the bundle, check its incident head, and start an empty triage state.

    The state is filled from the templates topic when the log service starts, not here: that needs Kafka.
    """
    privacy = privacy_for(settings)  # a bad policy fails before the bundle is loaded
    if bundle is None:
        bundle = load_bundle_for(settings, settings.bundle_dir)
    model_info = ModelInfo(bundle.name, bundle.version)
    classifier = BundleIncidentClassifier(bundle)
    return LogRuntime(
        state=LogTriageState(config or log_triage_config(settings)),
        classifier=classifier,
        model_info=model_info,
        limits=DecodeLimits(max_event_bytes=settings.max_event_bytes, max_text_chars=settings.max_text_chars),
        layouts=compile_layouts(settings.log_layouts),
        bundle=bundle,
        contracts=log_contracts(settings, model_info),
        privacy=privacy,
        router=log_router(settings, list(bundle.heads[classifier.head].labels)),
    )


def log_processor(settings: Settings, runtime: LogRuntime) -> LogProcessor:
    """The worker's log processor on ``runtime``'s state (it holds batches when ``STREAMER_LOG_HOLD_BATCH``)."""
    return LogProcessor(
        runtime.state,
        runtime.classifier,
        runtime.model_info,
        runtime.limits,
        runtime.contracts,
        privacy=runtime.privacy,
        layouts=runtime.layouts,
        hold=settings.log_hold_batch,
        router=runtime.router,
    )


def log_group_id(settings: Settings) -> str:
    """The log path's consumer group: its own, so ticket and log partitions are assigned independently."""
    return f"{settings.group_id}-logs"


#: Net new container objects between two young collections (Python's default: 700). A log batch of 2,000
#: lines keeps tens of thousands of them alive until it is sent; at 700 every collection met them alive and
#: pushed them to the older generations, which walked them again (11% of a log worker's CPU). This many
#: objects is also the most cyclic garbage that waits for a collection.
YOUNG_COLLECTION_THRESHOLD = 100_000


def tune_garbage_collector() -> int:
    """Fit the cyclic collector to a loaded process (a worker, a replay); returns how many objects it froze.

    After start-up the heap is large (Faust, aiokafka, pydantic settings, the bundle's labels and routes, the
    topic catalogue) and lives until exit, yet each full collection walked all of it again: it is frozen.
    Young collections wait for ``YOUNG_COLLECTION_THRESHOLD`` new objects. Together: 87-92 us of CPU a
    log line before, 65-73 after (``bench/bench_log_worker.py``, 3 runs each). Frozen objects are still
    freed when their last reference goes; garbage made later is collected as before.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
