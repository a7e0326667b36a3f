"""Topic definitions and payload schemas, read from ``topics/`` (data, not code).

Topic names, partitions, retention and schemas live in ``topics/topics.yaml`` and ``topics/schemas/`` so
that operators and downstream teams read one source of truth. This module only parses and validates them;
talking to the brokers is ``streamer.kafka.admin``'s job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from streamer.errors import ConfigError
from streamer.headers import Contracts, TopicContract, event_type

#: Names the code refers to; the definitions (partitions, configs, schema) come from topics.yaml.
TICKETS = "support.tickets.v1"
TICKETS_ENRICHED = "support.tickets.enriched.v1"
LOGS = "ops.logs.v1"
LOGS_ENRICHED = "ops.logs.enriched.v1"
ALERTS = "ops.alerts.v1"
LOG_TEMPLATES = "ops.log_templates.v1"
ESCALATIONS = "llm.escalations.v1"
LLM_RESPONSES = "llm.responses.v1"
DEADLETTER = "streamer.deadletter.v1"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as declared: what ``topics apply`` creates and checks for drift."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]
    schema: str | None = None
    key: str | None = None
    description: str = ""


@dataclass(frozen=True)
class TopicCatalog:
    """All declared topics plus the template for per-run replay topics."""

    topics: Mapping[str, TopicSpec]
    replay_suffix: str = ".replay.{run_id}"
    replay_config: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> TopicSpec:
        try:
            return self.topics[name]
        except KeyError:
            raise ConfigError(f"topic {name!r} is not declared in topics.yaml") from None

    def __contains__(self, name: object) -> bool:
        return name in self.topics

    def replay_topic(self, source: str, run_id: str) -> TopicSpec:
        """The definition of the output topic of one replay run over ``source``."""
        base = self[source]
        return TopicSpec(
            name=source + self.replay_suffix.format(run_id=run_id),
            partitions=base.partitions,
            replication_factor=base.replication_factor,
            config={**base.config, **self.replay_config},
            schema=base.schema,
            key=base.key,
            description=f"Replay {run_id} of {source}",
        )


def _as_config(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: config must be a mapping of Kafka topic configs")
    return {str(k): str(v) for k, v in raw.items()}


def load_catalog(path: Path) -> TopicCatalog:
    """Parse ``topics.yaml``; every problem names the topic and the field."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"topic definitions not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    defaults = doc.get("defaults") or {}
    default_config = _as_config(defaults.get("config"), f"{path}: defaults")
    topics: dict[str, TopicSpec] = {}
    for name, raw in (doc.get("topics") or {}).items():
        raw = raw or {}
        where = f"{path}: topic {name!r}"
        try:
            partitions = int(raw.get("partitions", defaults.get("partitions", 1)))
            replication = int(raw.get("replication_factor", defaults.get("replication_factor", 1)))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: partitions and replication_factor must be integers") from None
        if partitions < 1 or replication < 1:
            raise ConfigError(f"{where}: partitions and replication_factor must be at least 1")
        topics[name] = TopicSpec(
            name=name,
            partitions=partitions,
            replication_factor=replication,
            config={**default_config, **_as_config(raw.get("config"), where)},
            schema=raw.get("schema"),
            key=raw.get("key"),
            description=str(raw.get("description", "")).strip(),
        )
    replay = doc.get("replay") or {}
    return TopicCatalog(
        topics=topics,
        replay_suffix=str(replay.get("suffix", ".replay.{run_id}")),
        replay_config=_as_config(replay.get("config"), f"{path}: replay"),
    )


class SchemaRegistry:
    """The JSON Schemas of ``topics/schemas/``, with ``$ref`` between them resolved locally."""

    def __init__(self, schemas_dir: Path) -> None:
        self._dir = schemas_dir
        self._schemas: dict[str, dict[str, Any]] = {}
        resources = []
        for file in sorted(schemas_dir.glob("*.json")):
            schema = json.loads(file.read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
            self._schemas[file.name] = schema
            resources.append((schema["$id"], Resource.from_contents(schema)))
        if not self._schemas:
            raise ConfigError(f"no JSON schemas found in {schemas_dir}")
        self._registry: Registry[Any] = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}

    @cached_property
    def names(self) -> list[str]:
        return sorted(self._schemas)

    def document(self, name: str) -> dict[str, Any]:
        """The schema file ``name`` as parsed (not to be modified)."""
        if name not in self._schemas:
            raise ConfigError(f"schema {name!r} not found in {self._dir}")
        return self._schemas[name]

    def validator(self, name: str) -> Draft202012Validator:
        """A compiled validator for one schema file name, e.g. ``ticket.v1.json``."""
        if name not in self._validators:
            if name not in self._schemas:
                raise ConfigError(f"schema {name!r} not found in {self._dir}")
            self._validators[name] = Draft202012Validator(
                self._schemas[name], registry=self._registry, format_checker=FormatChecker()
            )
        return self._validators[name]

    def errors(self, name: str, value: object) -> list[str]:
        """Every violation as ``field: message``; empty when ``value`` is valid."""
        return [f"{error_path(err.absolute_path)}: {err.message}" for err in self.validator(name).iter_errors(value)]


def topic_contracts(catalog: TopicCatalog, registry: SchemaRegistry) -> dict[str, TopicContract]:
    """Per declared topic, its CloudEvents type (from its schema's name) and data schema (the schema's ``$id``)."""
    out: dict[str, TopicContract] = {}
    for spec in catalog.topics.values():
        if spec.schema:
            schema_id = registry.document(spec.schema).get("$id")
            out[spec.name] = TopicContract(spec.name, event_type(spec.schema), schema_id)
    return out


def load_contracts(topics_dir: Path, source: str, model: tuple[str, str] | None = None) -> Contracts:
    """The header factory of one producing path, from ``topics.yaml`` and ``schemas/`` under ``topics_dir``."""
    catalog = load_catalog(topics_dir / "topics.yaml")
    return Contracts(topic_contracts(catalog, SchemaRegistry(topics_dir / "schemas")), source, model)


def error_path(path: object) -> str:
    """A JSON path as people write it (``customer.tier``, ``items[2]``); ``$`` for the whole value."""
    out = ""
    for part in path:  # type: ignore[attr-defined]
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"
