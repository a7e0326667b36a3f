"""Make the cluster match ``topics.yaml``: create what is missing, report drift, never delete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from streamer.kafka.clients import admin_client
from streamer.settings import Settings
from streamer.topics import TopicSpec

_TOPIC_ALREADY_EXISTS = 36
_LEADER_NOT_AVAILABLE = 5


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference between a declared topic and the cluster's view of it."""

    topic: str
    what: str
    declared: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.what} is {self.actual}, declared {self.declared}"


@dataclass
class ApplyReport:
    """What ``apply_topics`` did; ``changed`` is false on a second run against the same cluster."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created)


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as the cluster sees it."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


async def describe(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, TopicState]:
    """Partitions, replication and (non-default) configs of the named topics that exist."""
    if not names:
        return {}
    for _ in range(50):
        meta = await admin.describe_topics(list(names))
        # Just-created topics report LEADER_NOT_AVAILABLE until their partitions have leaders.
        if not any(t["error_code"] == _LEADER_NOT_AVAILABLE for t in meta):
            break
        await asyncio.sleep(0.2)
    found = {t["topic"]: t for t in meta if t["error_code"] == 0}
    if not found:
        return {}
    configs: dict[str, dict[str, str]] = {name: {} for name in found}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in found])
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries = configs.setdefault(resource["resource_name"], {})
            for entry in resource["config_entries"]:
                if entry["config_value"] is not None:
                    entries[entry["config_names"]] = entry["config_value"]
    return {
        name: TopicState(
            name=name,
            partitions=len(topic["partitions"]),
            replication_factor=max((len(p["replicas"]) for p in topic["partitions"]), default=0),
            config=configs[name],
        )
        for name, topic in found.items()
    }


def drift_of(spec: TopicSpec, state: TopicState) -> list[Drift]:
    """Differences that matter: partition count, replication and every declared config."""
    out: list[Drift] = []
    if state.partitions != spec.partitions:
        out.append(Drift(spec.name, "partitions", str(spec.partitions), str(state.partitions)))
    if state.replication_factor != spec.replication_factor:
        out.append(Drift(spec.name, "replication_factor", str(spec.replication_factor), str(state.replication_factor)))
    for key, value in sorted(spec.config.items()):
        actual = state.config.get(key)
        if actual != value:
            out.append(Drift(spec.name, key, value, str(actual)))
    return out


def deployed_spec(settings: Settings, spec: TopicSpec) -> TopicSpec:
    """A declared topic as this deployment creates it: the prefix, and the replication settings when set."""
    config = dict(spec.config)
    if settings.topic_min_insync_replicas is not None:
        config["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    return replace(
        spec,
        name=settings.topic(spec.name),
        replication_factor=settings.topic_replication_factor or spec.replication_factor,
        config=config,
    )


async def apply_topics(settings: Settings, specs: Iterable[TopicSpec]) -> ApplyReport:
    """Create missing topics with their declared configs; report drift of the existing ones.

    Names get ``settings.topic_prefix``, replication ``STREAMER_TOPIC_REPLICATION_FACTOR`` and
    ``STREAMER_TOPIC_MIN_INSYNC_REPLICAS`` when set; the report uses the cluster's (prefixed) names.
    """
    specs = [deployed_spec(settings, s) for s in specs]
    report = ApplyReport()
    async with admin_client(settings) as admin:
        existing = await describe(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=s.name,
                        num_partitions=s.partitions,
                        replication_factor=s.replication_factor,
                        topic_configs=dict(s.config),
                    )
                    for s in missing
                ]
            )
            raced: set[str] = set()
            for topic, code, *rest in response.topic_errors:
                if code == _TOPIC_ALREADY_EXISTS:
                    raced.add(topic)  # created meanwhile by another instance: fine
                elif code:
                    message = rest[0] if rest and rest[0] else for_code(code).__name__
                    raise for_code(code)(f"could not create topic {topic}: {message}")
            report.created = [s.name for s in missing if s.name not in raced]
            await describe(admin, report.created)  # wait until they have leaders
        for spec in specs:
            if spec.name in existing:
                drift = drift_of(spec, existing[spec.name])
                report.drift.extend(drift)
                if not drift:
                    report.unchanged.append(spec.name)
    return report


async def list_topics(settings: Settings, include_internal: bool = False) -> list[TopicState]:
    """The cluster's view of every topic, sorted by name."""
    async with admin_client(settings) as admin:
        names = [n for n in await admin.list_topics() if include_internal or not n.startswith("__")]
        states = await describe(admin, sorted(names))
    return [states[n] for n in sorted(states)]


async def delete_topics_where(
    settings: Settings, doomed: Callable[[str], bool], *, settle_s: float = 1.0, passes: int = 5
) -> list[str]:
    """Delete every topic whose name ``doomed`` accepts; returns the names deleted.

    A broker's topic list can trail topics created moments before (seconds, right after a burst of
    creations), so deletion goes in passes until a list taken ``settle_s`` after the last one shows nothing
    new.
    """
    deleted: set[str] = set()
    async with admin_client(settings) as admin:
        for attempt in range(passes):
            names = {n for n in await admin.list_topics() if doomed(n)} - deleted
            if not names and attempt > 0:
                break
            if names:
                await admin.delete_topics(sorted(names), timeout_ms=60_000)
                deleted |= names
            await asyncio.sleep(settle_s)
    return sorted(deleted)


async def delete_prefixed_topics(settings: Settings) -> list[str]:
    """Delete every topic under ``settings.topic_prefix``: the scratch namespace of a benchmark run.

    Refuses an empty prefix, which would name every topic on the cluster.
    """
    prefix = settings.topic_prefix
    if not prefix:
        raise ValueError("refusing to delete topics without a topic prefix")
    return await delete_topics_where(settings, lambda name: name.startswith(prefix))
